//! The codec seam: how the protocol an exchange speaks writes what an
//! action takes and gives back. The agent runtime, the behaviors and the
//! handles ask the exchange's [`Codec`] and never branch on the protocol;
//! a new protocol is an arm here and a backend, nothing above them.
//!
//! - [`Protocol::Native`]: MessagePack of the user's types; a fallible
//!   action's `Result` travels whole, so its error arrives typed.
//! - [`Protocol::Academy1`]: JSON text of the user's types, which the
//!   Academy 1.0 backend embeds in its messages as it is (see `json`);
//!   arguments may come by keyword (`kargs`), one argument wrapped in
//!   `pargs`' array; and an action's error travels as the text of a raised
//!   exception that names its type.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::description::ActionInfo;
use crate::message::{encode_payload, RemoteError, RemoteErrorKind, WireError};

/// The protocol a hybrid exchange speaks, chosen when it is built
/// ([`ExchangeBuilder::protocol`](crate::ExchangeBuilder::protocol)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// This crate's own: MessagePack envelopes sealed with the shared
    /// secret, peer-to-peer TCP links with an authenticated handshake and
    /// acknowledgements, Redis queues for mailboxes that are not listening.
    #[default]
    Native,
    /// Academy 1.0's, as academy-py 1.0.0 speaks it, to share a deployment
    /// with Python agents: its Redis keys (`ns:agent:`, `ns:heartbeat:`,
    /// `ACTIVE`/`INACTIVE`), its JSON messages (arguments in `pargs` and
    /// `kargs`, results and raised errors as JSON), and behavior names
    /// Python discovers (`#[agent(name = "rust.Calculator")]`).
    ///
    /// Messages go through the Redis queues only, both ways. Academy 1.0's
    /// direct path has no handshake and no acknowledgement (a frame written
    /// into a connection that then fails is lost without a trace), so this
    /// mode publishes no address, and Python senders queue too. There is no
    /// secret either: anyone who can write to the Redis can send; keep it
    /// private. Python callers must choose JSON (a pickled request is
    /// answered with an error saying how): `Handle(agent_id,
    /// exchange=client, request_serializer=SerializationStrategy.JSON)`.
    Academy1,
}

/// Writes and reads action payloads as one [`Protocol`] has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Codec(Protocol);

impl Codec {
    /// The codec of `protocol`.
    pub(crate) fn new(protocol: Protocol) -> Self {
        Self(protocol)
    }

    /// `value` as a payload.
    pub(crate) fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, WireError> {
        match self.0 {
            Protocol::Academy1 => {
                serde_json::to_vec(value).map(Bytes::from).map_err(|e| WireError::Json(e.to_string()))
            }
            Protocol::Native => Ok(encode_payload(value)?),
        }
    }

    /// A payload as `T`.
    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, WireError> {
        match self.0 {
            Protocol::Academy1 => serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string())),
            Protocol::Native => Ok(rmp_serde::from_slice(bytes)?),
        }
    }

    /// Arguments by keyword put in the order of `action`'s parameters
    /// (`None`: they are as they came).
    pub(crate) fn arrange(
        self,
        action: &str,
        args: &[u8],
        actions: &[ActionInfo],
    ) -> Result<Option<Bytes>, RemoteError> {
        let Protocol::Academy1 = self.0 else { return Ok(None) };
        let Some(info) = actions.iter().find(|info| info.name == action) else { return Ok(None) };
        crate::json::arrange(args, &info.parameters).map_err(|why| RemoteError {
            kind: RemoteErrorKind::BadPayload,
            message: format!("arguments of {action} do not fit: {why}"),
        })
    }

    /// An action's arguments, decoded.
    pub(crate) fn decode_args<A: DeserializeOwned>(self, action: &str, args: &[u8]) -> Result<A, RemoteError> {
        self.decode(args)
            .or_else(|e| match self.0 {
                // One argument in an array (as Academy 1.0's `pargs` has it)
                // for a message that is that argument (a newtype), none for
                // an action that takes none, or keyword arguments for a
                // message that takes them as its fields.
                Protocol::Academy1 => match crate::json::sole_argument(args) {
                    Some(inner) => self.decode(inner.as_bytes()).map_err(|_| e),
                    None => crate::json::fields(args).ok_or(e),
                },
                Protocol::Native => Err(e),
            })
            .map_err(|e| RemoteError {
                kind: RemoteErrorKind::BadPayload,
                message: format!("arguments of {action} do not decode: {e}"),
            })
    }

    /// The result of `action` (or anything an agent answers it with), encoded.
    pub(crate) fn encode_result(self, action: &str, result: &impl Serialize) -> Result<Bytes, RemoteError> {
        self.encode(result).map_err(|e| RemoteError {
            kind: RemoteErrorKind::Internal,
            message: format!("the result of {action} does not encode: {e}"),
        })
    }

    /// An encoded result of `action` as the answer carries it. Academy 1.0
    /// has no typed errors: a `Result` splits into the value alone, or an
    /// error raised with a text that names its type and holds its JSON
    /// (`MarketError: {"OutOfStock":{"left":7}}`).
    pub(crate) fn answer(self, action: &str, actions: &[ActionInfo], bytes: Bytes) -> Result<Bytes, RemoteError> {
        let Protocol::Academy1 = self.0 else { return Ok(bytes) };
        let error_type = actions.iter().find(|info| info.name == action).and_then(|info| info.error.as_deref());
        match error_type.map(|error_type| (error_type, crate::json::split_result(&bytes))) {
            Some((_, Some(Ok(value)))) => Ok(value),
            Some((error_type, Some(Err(error)))) => {
                let message = crate::json::raised_text(error_type, &error);
                Err(RemoteError { kind: RemoteErrorKind::Raised, message })
            }
            _ => Ok(bytes),
        }
    }

    /// Whether a fallible action's error comes inside its result (else it
    /// comes as a raised error: see [`raised`](Self::raised)).
    pub(crate) fn typed_errors(self) -> bool {
        self.0 == Protocol::Native
    }

    /// The action error of type `error_type` that a raised error's text
    /// holds, if it holds one (any other exception, such as a Python
    /// `ValueError("3")`, is not the action's error, whatever its text parses as).
    pub(crate) fn raised<E: DeserializeOwned>(self, error_type: &str, message: &str) -> Option<E> {
        crate::json::raised_value(error_type, message)
    }
}
