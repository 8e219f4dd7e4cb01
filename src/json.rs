//! Academy 1.0's wire format: one JSON object per message,
//! `{"header": {...}, "body": {...}}`, as academy-py 1.0.0 writes it (see
//! `ACADEMY-1.0.md`), translated to and from this crate's [`Envelope`].
//!
//! In this protocol action arguments and results are JSON text from end to
//! end (the [`Codec`](crate::codec::Codec) writes the user's types as JSON),
//! embedded here as the strings Academy 1.0 nests in its messages, without
//! being parsed or re-encoded: a request's arguments are `pargs` (a JSON
//! array: the action's parameters in order) and `kargs` (an object by
//! parameter name), a result is `["__serialized__", "<json>"]`, and an
//! error is an exception whose text the caller raises. Pickle, Python's
//! default, is refused with an answer that says how to choose JSON.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::identifier::{EntityId, Role};
use crate::message::{Body, Envelope, RemoteError, RemoteErrorKind, TraceContext, WireError, PROTOCOL_VERSION};

/// What a Python reader of a queue takes as "this mailbox is closed".
pub(crate) const CLOSED: &[u8] = b"<CLOSED>";

/// The protocol version academy-py 1.0.0 writes; only the major must match.
const ACADEMY_PROTOCOL: &str = "1.1";
/// The Academy version this crate speaks as.
const ACADEMY_VERSION: &str = "1.0.0";

/// What Python's handles need to hear to call a Rust agent.
const CHOOSE_JSON: &str = "Rust agents read JSON arguments only, and this request's are pickled: create the \
     handle with `Handle(agent_id, exchange=client, request_serializer=SerializationStrategy.JSON)` (from \
     academy.serialize), or call `default_serializer.set(SerializationStrategy.JSON)` once";

/// Academy 1.0's error codes (`academy-error-response`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum ErrorCode {
    MailboxTerminated = 0,
    ActionInvalidState = 2,
    ActionCancelled = 3,
    InvalidClient = 4,
    IncompatibleProtocol = 5,
}

/// A queue entry or frame, read.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a message is the common case: not boxed
pub(crate) enum Incoming {
    /// A message for the mailbox.
    Message(Envelope),
    /// A message the mailbox must not take, with the answer its sender gets
    /// instead (pickled arguments, another major protocol version, a request
    /// to a client).
    Refused(Box<Envelope>, String),
    /// The close sentinel: the mailbox was terminated.
    Closed,
}

#[derive(Serialize, Deserialize)]
struct Message<B> {
    header: Header,
    body: B,
}

#[derive(Serialize, Deserialize)]
struct Header {
    src: Id,
    dest: Id,
    tag: Uuid,
    #[serde(default)]
    label: Option<Uuid>,
    kind: HeaderKind,
    #[serde(default = "default_protocol")]
    protocol_version: Option<String>,
    #[serde(default = "default_academy")]
    academy_version: String,
    /// This crate's own fields; Python ignores them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

fn default_protocol() -> Option<String> {
    Some(ACADEMY_PROTOCOL.to_owned())
}

fn default_academy() -> String {
    "0.5.0".to_owned()
}

#[derive(Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum HeaderKind {
    Request,
    Response,
}

/// An entity id as Python writes it.
#[derive(Serialize, Deserialize)]
struct Id {
    uid: Uuid,
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "agent_role")]
    role: PyRole,
}

fn agent_role() -> PyRole {
    PyRole::Agent
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PyRole {
    Agent,
    User,
}

impl From<&EntityId> for Id {
    fn from(id: &EntityId) -> Self {
        let role = match id.role() {
            Role::Agent => PyRole::Agent,
            Role::Client => PyRole::User,
        };
        Self { uid: id.uid(), name: id.name().map(str::to_owned), role }
    }
}

impl From<Id> for EntityId {
    fn from(id: Id) -> Self {
        let role = match id.role {
            PyRole::Agent => Role::Agent,
            PyRole::User => Role::Client,
        };
        EntityId::from_parts(id.uid, role, id.name.as_deref())
    }
}

/// Every body kind of Academy 1.0.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum JsonBody {
    ActionRequest {
        action: String,
        serialization: String,
        #[serde(default)]
        result_serialization: Option<String>,
        #[serde(default)]
        exception_serialization: Option<String>,
        #[serde(default = "empty_array")]
        pargs: Value,
        #[serde(default = "empty_object")]
        kargs: Value,
    },
    PingRequest {},
    CancelRequest {
        target_tag: Uuid,
    },
    ShutdownRequest {
        #[serde(default)]
        terminate: Option<bool>,
    },
    ActionResponse {
        result: Value,
        serialization: String,
    },
    SuccessResponse {},
    UserErrorResponse {
        serialization: String,
        exception: Value,
    },
    AcademyErrorResponse {
        error_code: u8,
        #[serde(default)]
        mailbox_id: Option<Id>,
    },
}

fn empty_array() -> Value {
    Value::Array(Vec::new())
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// The JSON bytes of `envelope`, as academy-py 1.0.0 reads them.
pub(crate) fn encode(envelope: &Envelope) -> Result<Vec<u8>, WireError> {
    let (kind, body) = match &envelope.body {
        Body::ActionRequest { action, args } => {
            let (pargs, kargs) = split_arguments(args)?;
            let body = JsonBody::ActionRequest {
                action: action.clone(),
                serialization: "json".into(),
                result_serialization: None,
                exception_serialization: None,
                pargs: Value::String(pargs),
                kargs: Value::String(kargs),
            };
            (HeaderKind::Request, body)
        }
        Body::ActionResponse { result: Ok(bytes), .. } => {
            let text = json_text(bytes)?;
            let result = Value::Array(vec!["__serialized__".into(), text.into()]);
            (HeaderKind::Response, JsonBody::ActionResponse { result, serialization: "json".into() })
        }
        Body::ActionResponse { result: Err(error), .. } | Body::ShutdownResponse { result: Err(error) } => {
            (HeaderKind::Response, error_body(error, &envelope.src))
        }
        Body::PingRequest => (HeaderKind::Request, JsonBody::PingRequest {}),
        Body::PingResponse | Body::ShutdownResponse { result: Ok(()) } => {
            (HeaderKind::Response, JsonBody::SuccessResponse {})
        }
        Body::CancelRequest { target } => (HeaderKind::Request, JsonBody::CancelRequest { target_tag: *target }),
        Body::ShutdownRequest { terminate } => {
            (HeaderKind::Request, JsonBody::ShutdownRequest { terminate: Some(*terminate) })
        }
    };
    let header = Header {
        src: (&envelope.src).into(),
        dest: (&envelope.dest).into(),
        tag: envelope.tag,
        label: envelope.label,
        kind,
        protocol_version: default_protocol(),
        academy_version: ACADEMY_VERSION.into(),
        deadline: envelope.deadline,
        traceparent: envelope.trace.map(|t| t.traceparent()),
    };
    serde_json::to_vec(&Message { header, body }).map_err(|e| WireError::Json(e.to_string()))
}

/// An error answer: Academy's own codes where one means the same, else a
/// raised exception whose text names the failure.
fn error_body(error: &RemoteError, me: &EntityId) -> JsonBody {
    let code = match error.kind {
        // Python answers an action its agent's shutdown stopped the same way.
        RemoteErrorKind::Cancelled | RemoteErrorKind::AgentStopped => Some(ErrorCode::ActionCancelled),
        RemoteErrorKind::Terminated => Some(ErrorCode::MailboxTerminated),
        RemoteErrorKind::InvalidState => Some(ErrorCode::ActionInvalidState),
        RemoteErrorKind::InvalidClient => Some(ErrorCode::InvalidClient),
        RemoteErrorKind::Incompatible => Some(ErrorCode::IncompatibleProtocol),
        _ => None,
    };
    if let Some(code) = code {
        let mailbox_id = (code != ErrorCode::ActionCancelled).then(|| me.into());
        return JsonBody::AcademyErrorResponse { error_code: code as u8, mailbox_id };
    }
    let text = match error.kind {
        RemoteErrorKind::Raised => error.message.clone(),
        kind => format!("{kind:?}: {}", error.message),
    };
    let exception = serde_json::json!({ "__exception__": true, "exception_str": text });
    JsonBody::UserErrorResponse { serialization: "json".into(), exception: Value::String(exception.to_string()) }
}

/// Reads a queue entry or frame written by academy-py 1.0.0 (or by
/// [`encode`]). Bytes that are not such a message are an error; a message
/// this side must refuse comes back with its answer.
pub(crate) fn decode(bytes: &[u8]) -> Result<Incoming, WireError> {
    if bytes == CLOSED {
        return Ok(Incoming::Closed);
    }
    let message: Message<Value> = serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string()))?;
    let Message { header, body } = message;
    let request = header.kind == HeaderKind::Request;
    let mut envelope = Envelope {
        version: PROTOCOL_VERSION,
        tag: header.tag,
        src: header.src.into(),
        dest: header.dest.into(),
        label: header.label,
        deadline: header.deadline,
        trace: header.traceparent.as_deref().and_then(parse_traceparent),
        body: Body::PingRequest,
    };
    let refuse = |envelope: &Envelope, error: RemoteError| {
        let why = error.message.clone();
        Ok(Incoming::Refused(
            Box::new(envelope.reply(Body::ActionResponse { action: String::new(), result: Err(error) })),
            why,
        ))
    };
    if !compatible(header.protocol_version.as_deref()) {
        let why = format!("protocol version {:?} is not 1.x", header.protocol_version);
        return match request {
            true => refuse(&envelope, RemoteError { kind: RemoteErrorKind::Incompatible, message: why }),
            false => Err(WireError::Json(why)),
        };
    }
    if request && envelope.dest.role() == Role::Client {
        let message = format!("{} is a client: it serves no requests", envelope.dest);
        return refuse(&envelope, RemoteError { kind: RemoteErrorKind::InvalidClient, message });
    }
    let body: JsonBody = match serde_json::from_value(body) {
        Ok(body) => body,
        // A request is answered, whatever its body: its caller waits.
        Err(e) if request => {
            let message = format!("unreadable request body: {e}");
            return refuse(&envelope, RemoteError { kind: RemoteErrorKind::BadPayload, message });
        }
        Err(e) => return Err(WireError::Json(e.to_string())),
    };
    envelope.body = match body {
        JsonBody::ActionRequest { action, serialization, pargs, kargs, .. } => {
            if serialization != "json" {
                let message = format!("{CHOOSE_JSON} (got {serialization:?})");
                return refuse(&envelope, RemoteError { kind: RemoteErrorKind::BadPayload, message });
            }
            match arguments(pargs, kargs) {
                Ok(args) => Body::ActionRequest { action, args },
                Err(message) => return refuse(&envelope, RemoteError { kind: RemoteErrorKind::BadPayload, message }),
            }
        }
        JsonBody::PingRequest {} => Body::PingRequest,
        JsonBody::CancelRequest { target_tag } => Body::CancelRequest { target: target_tag },
        // Python's default for a requested shutdown: terminate.
        JsonBody::ShutdownRequest { terminate } => Body::ShutdownRequest { terminate: terminate.unwrap_or(true) },
        JsonBody::ActionResponse { result, serialization } => {
            Body::ActionResponse { action: String::new(), result: result_payload(result, &serialization) }
        }
        // Academy 1.0 answers pings, cancels and shutdowns alike.
        JsonBody::SuccessResponse {} => Body::PingResponse,
        JsonBody::UserErrorResponse { serialization, exception } => {
            let message = exception_text(exception, &serialization);
            Body::ActionResponse {
                action: String::new(),
                result: Err(RemoteError { kind: RemoteErrorKind::Raised, message }),
            }
        }
        JsonBody::AcademyErrorResponse { error_code, .. } => {
            let (kind, message) = match error_code {
                0 => (RemoteErrorKind::Terminated, "the mailbox is terminated"),
                1 => (RemoteErrorKind::Cancelled, "the ping was cancelled"),
                2 => (RemoteErrorKind::InvalidState, "no such running action (ACTION_INVALID_STATE)"),
                3 => (RemoteErrorKind::Cancelled, "the action was cancelled"),
                4 => (RemoteErrorKind::InvalidClient, "a client serves no requests"),
                5 => (RemoteErrorKind::Incompatible, "incompatible protocol versions"),
                _ => (RemoteErrorKind::Internal, "an unknown Academy error code"),
            };
            let message = format!("{message} (Academy error code {error_code})");
            Body::ActionResponse { action: String::new(), result: Err(RemoteError { kind, message }) }
        }
    };
    Ok(Incoming::Message(envelope))
}

/// Major version 1, no local part (what Python accepts).
fn compatible(version: Option<&str>) -> bool {
    version.is_some_and(|v| !v.contains('+') && v.split('.').next() == Some("1"))
}

fn parse_traceparent(text: &str) -> Option<TraceContext> {
    let mut parts = text.split('-');
    let (_, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    Some(TraceContext { trace_id: u128::from_str_radix(trace, 16).ok()?, span_id: u64::from_str_radix(span, 16).ok()? })
}

/// A field that Python writes as JSON text (or, leniently, as JSON).
fn embedded(value: Value, what: &str) -> Result<Value, String> {
    match value {
        Value::String(text) => serde_json::from_str(&text).map_err(|e| format!("{what} is not JSON text: {e}")),
        other => Ok(other),
    }
}

/// The JSON text of a field Python writes as JSON text (or, leniently, as
/// JSON), not parsed.
fn embedded_text(value: Value) -> String {
    match value {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// A payload's bytes as the JSON text they are.
fn json_text(bytes: &[u8]) -> Result<String, WireError> {
    match bytes.is_empty() {
        true => Ok("null".into()),
        false => String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Json("a payload is not UTF-8 JSON".into())),
    }
}

/// The arguments of a JSON request as the agent reads them: the positional
/// ones as they came (a JSON array); with keyword ones, an object from
/// position (`"0"`, `"1"`...) or name to value, which the agent puts in
/// order by its parameters' names.
fn arguments(pargs: Value, kargs: Value) -> Result<Bytes, String> {
    let (pargs, kargs) = (embedded_text(pargs), embedded_text(kargs));
    let kargs: BTreeMap<String, &RawValue> =
        serde_json::from_str(&kargs).map_err(|e| format!("kargs is not a JSON object: {e}"))?;
    if kargs.is_empty() {
        return match pargs.trim_start().starts_with('[') {
            true => Ok(pargs.into()),
            false => Err("pargs is not a JSON array".into()),
        };
    }
    let pargs: Vec<&RawValue> = serde_json::from_str(&pargs).map_err(|e| format!("pargs is not a JSON array: {e}"))?;
    let keywords = Keywords { pargs: &pargs, kargs: &kargs };
    serde_json::to_vec(&keywords).map(Bytes::from).map_err(|e| format!("the arguments do not encode: {e}"))
}

/// The arguments an agent was given, as Academy 1.0's `pargs` and `kargs`
/// texts: a keyword object (see [`arguments`]) splits back into both, an
/// array is `pargs`, no arguments none, and one other value is the one
/// positional argument.
fn split_arguments(args: &[u8]) -> Result<(String, String), WireError> {
    let text = json_text(args)?;
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {
            let given: BTreeMap<Key, &RawValue> =
                serde_json::from_str(&text).map_err(|e| WireError::Json(format!("keyword arguments: {e}")))?;
            let (mut pargs, mut kargs) = (Vec::new(), BTreeMap::new());
            for (key, value) in given {
                match key {
                    Key::Position(_) => pargs.push(value),
                    Key::Name(name) => drop(kargs.insert(name, value)),
                }
            }
            let text = |e: serde_json::Error| WireError::Json(e.to_string());
            Ok((serde_json::to_string(&pargs).map_err(text)?, serde_json::to_string(&kargs).map_err(text)?))
        }
        Some(b'[') => Ok((text, "{}".into())),
        // `()`: no arguments.
        _ if text.trim() == "null" => Ok(("[]".into(), "{}".into())),
        _ => Ok((format!("[{text}]"), "{}".into())),
    }
}

/// Keyword arguments (see [`arguments`]) read as a hand-written message
/// that takes them as its fields: by name, and by position (a field's
/// index, as serde reads a struct from MessagePack).
pub(crate) fn fields<T: serde::de::DeserializeOwned>(args: &[u8]) -> Option<T> {
    struct ByKey(BTreeMap<Key, Value>);
    impl Serialize for ByKey {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (key, value) in &self.0 {
                match key {
                    Key::Position(i) => map.serialize_entry(i, value)?,
                    Key::Name(name) => map.serialize_entry(name, value)?,
                }
            }
            map.end()
        }
    }
    if !args.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    let given = ByKey(serde_json::from_slice(args).ok()?);
    let packed = crate::message::encode_payload(&given).ok()?;
    T::deserialize(&mut rmp_serde::Deserializer::from_read_ref(&packed[..]).with_human_readable()).ok()
}

/// The one argument in `pargs`' array (`null` for none), for an action that
/// takes that argument as its message; `None` if there are more.
pub(crate) fn sole_argument(args: &[u8]) -> Option<&str> {
    let pargs: Vec<&RawValue> = serde_json::from_slice(args).ok()?;
    match pargs[..] {
        [] => Some("null"),
        [one] => Some(one.get()),
        _ => None,
    }
}

/// Positional arguments (a tuple) and keyword ones (a map or struct) as one
/// value, which is written as Academy 1.0's `pargs` and `kargs`.
pub(crate) fn with_keywords(args: &impl Serialize, kwargs: &impl Serialize) -> Result<impl Serialize, WireError> {
    let pargs = match value_of(args)? {
        Value::Array(pargs) => pargs,
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let Value::Object(kargs) = value_of(kwargs)? else {
        return Err(WireError::Json("keyword arguments must be a map or a struct".into()));
    };
    Ok(OwnedKeywords { pargs, kargs: kargs.into_iter().collect() })
}

fn value_of(value: &impl Serialize) -> Result<Value, WireError> {
    serde_json::to_value(value).map_err(|e| WireError::Json(e.to_string()))
}

/// [`Keywords`], owned.
struct OwnedKeywords {
    pargs: Vec<Value>,
    kargs: BTreeMap<String, Value>,
}

impl Serialize for OwnedKeywords {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Keywords { pargs: &self.pargs, kargs: &self.kargs }.serialize(s)
    }
}

/// Positional and keyword arguments as one JSON object, by position
/// (`"0"`, `"1"`...) and by name.
struct Keywords<'a, V> {
    pargs: &'a [V],
    kargs: &'a BTreeMap<String, V>,
}

impl<V: Serialize> Serialize for Keywords<'_, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.pargs.len() + self.kargs.len()))?;
        for (i, value) in self.pargs.iter().enumerate() {
            map.serialize_entry(&i.to_string(), value)?;
        }
        for (name, value) in self.kargs {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// An argument's place in an object of arguments: its position (a key of
/// digits) or its name.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Position(u64),
    Name(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = String::deserialize(d)?;
        Ok(match key.parse() {
            Ok(position) => Key::Position(position),
            Err(_) => Key::Name(key),
        })
    }
}

/// Puts keyword arguments in order: `args`, an object from position or name
/// to value (as [`arguments`] writes them), becomes the array of the
/// action's `parameters`. `Ok(None)`: nothing to do (not an object, or a
/// hand-written message, which reads its fields by name itself).
pub(crate) fn arrange(args: &[u8], parameters: &[crate::description::Parameter]) -> Result<Option<Bytes>, String> {
    if !args.trim_ascii_start().starts_with(b"{") {
        return Ok(None);
    }
    let Ok(mut given) = serde_json::from_slice::<BTreeMap<Key, &RawValue>>(args) else {
        return Ok(None);
    };
    let named = |key: &Key| matches!(key, Key::Name(name) if parameters.iter().any(|p| p.name == *name));
    if parameters.len() == 1 && parameters[0].name == "message" && !given.keys().all(named) {
        return Ok(None);
    }
    let mut ordered = Vec::with_capacity(parameters.len());
    for (i, parameter) in parameters.iter().enumerate() {
        let value =
            given.remove(&Key::Position(i as u64)).or_else(|| given.remove(&Key::Name(parameter.name.to_string())));
        ordered.push(value.ok_or_else(|| format!("missing argument `{}`", parameter.name))?);
    }
    if let Some(extra) = given.keys().next() {
        return Err(match extra {
            Key::Position(_) => format!("more than {} positional arguments", parameters.len()),
            Key::Name(name) => format!("no parameter named `{name}`"),
        });
    }
    serde_json::to_vec(&ordered).map(|json| Some(json.into())).map_err(|e| e.to_string())
}

/// A response's result as the JSON text it carries, or why it cannot be read.
fn result_payload(result: Value, serialization: &str) -> Result<Bytes, RemoteError> {
    let bad = |message: String| RemoteError { kind: RemoteErrorKind::BadPayload, message };
    Ok(match result {
        Value::Array(mut pair) if pair.len() == 2 && pair[0] == "__serialized__" => {
            if serialization != "json" {
                return Err(bad(format!("the result is {serialization}-encoded, not JSON")));
            }
            embedded_text(pair.pop().expect("two elements")).into()
        }
        other => other.to_string().into(),
    })
}

/// The text of a raised exception, as Python's `str(e)`.
fn exception_text(exception: Value, serialization: &str) -> String {
    if serialization != "json" {
        return format!("the agent raised an exception, sent {serialization}-encoded (unreadable here)");
    }
    match embedded(exception, "the exception") {
        Ok(Value::Object(fields)) => match fields.get("exception_str") {
            Some(Value::String(text)) => text.trim_end().to_owned(),
            _ => Value::Object(fields).to_string(),
        },
        Ok(other) => other.to_string(),
        Err(why) => why,
    }
}

/// The error value of a `Result` (its JSON), as the text Python raises:
/// `"MarketError: {\"OutOfStock\": {\"left\": 7}}"`.
pub(crate) fn raised_text(error_type: &str, bytes: &[u8]) -> String {
    format!("{error_type}: {}", String::from_utf8_lossy(bytes))
}

/// Reads back the error value of a [`raised_text`] written for
/// `error_type`: the text of any other exception is not a typed error.
pub(crate) fn raised_value<E: serde::de::DeserializeOwned>(error_type: &str, text: &str) -> Option<E> {
    let json = text.strip_prefix(error_type)?.strip_prefix(": ")?;
    serde_json::from_str(json).ok()
}

/// Splits a `Result`'s JSON (`{"Ok": v}` or `{"Err": e}`) into the value's
/// and the error's.
pub(crate) fn split_result(bytes: &[u8]) -> Option<Result<Bytes, Bytes>> {
    #[derive(Deserialize)]
    enum Outcome<'a> {
        #[serde(borrow)]
        Ok(&'a RawValue),
        #[serde(borrow)]
        Err(&'a RawValue),
    }
    let text = |raw: &RawValue| Bytes::copy_from_slice(raw.get().as_bytes());
    Some(match serde_json::from_slice(bytes).ok()? {
        Outcome::Ok(v) => Ok(text(v)),
        Outcome::Err(e) => Err(text(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::ClientId;

    fn pair() -> (EntityId, EntityId) {
        (ClientId::new(Some("me")).into(), EntityId::new(Role::Agent, Some("calc")))
    }

    #[test]
    fn a_python_request_decodes() {
        let raw = br#"{"header":{"src":{"uid":"a88a31b0-cc80-4002-9fdc-67b7275fc157","name":"me","role":"user"},
            "dest":{"uid":"fadc55af-e11d-4b97-84cf-e5fd18099db3","name":null,"role":"agent"},
            "tag":"d1505c9a-0000-4000-8000-000000000001","label":"abd19c71-0000-4000-8000-000000000002",
            "kind":"request","protocol_version":"1.1","academy_version":"1.0.0"},
            "body":{"action":"add","serialization":"json","result_serialization":null,
            "exception_serialization":null,"pargs":"[1, 2]","kargs":"{}","kind":"action-request"}}"#;
        let Incoming::Message(envelope) = decode(raw).unwrap() else { panic!("refused") };
        let Body::ActionRequest { action, args } = &envelope.body else { panic!("{:?}", envelope.body) };
        assert_eq!(action, "add");
        assert_eq!(serde_json::from_slice::<(i64, i64)>(args).unwrap(), (1, 2));
        assert_eq!(envelope.src.role(), Role::Client);
        assert_eq!(envelope.src.name(), Some("me"));
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let (me, agent) = pair();
        let args = Bytes::from(serde_json::to_vec(&(3i64, "x")).unwrap());
        let mut request = Envelope::new(me.clone(), agent.clone(), Body::ActionRequest { action: "add".into(), args });
        request.label = Some(Uuid::new_v4());
        request.deadline = Some(42);
        request.trace = Some(TraceContext::new());
        let Incoming::Message(back) = decode(&encode(&request).unwrap()).unwrap() else { panic!() };
        assert_eq!(back, request);
        let result = Bytes::from(serde_json::to_vec(&vec![1u8, 2]).unwrap());
        let answer = request.reply(Body::ActionResponse { action: String::new(), result: Ok(result.clone()) });
        let text = String::from_utf8(encode(&answer).unwrap()).unwrap();
        assert!(text.contains(r#""result":["__serialized__","[1,2]"]"#), "{text}");
        let Incoming::Message(back) = decode(text.as_bytes()).unwrap() else { panic!() };
        assert_eq!(back.body, Body::ActionResponse { action: String::new(), result: Ok(result) });
        for body in [
            Body::PingRequest,
            Body::CancelRequest { target: Uuid::new_v4() },
            Body::ShutdownRequest { terminate: false },
        ] {
            let message = Envelope::new(me.clone(), agent.clone(), body);
            let Incoming::Message(back) = decode(&encode(&message).unwrap()).unwrap() else { panic!() };
            assert_eq!(back, message);
        }
    }

    #[test]
    fn errors_become_exceptions_or_codes() {
        let (me, agent) = pair();
        let request = Envelope::new(me, agent, Body::PingRequest);
        let raised = RemoteError { kind: RemoteErrorKind::Raised, message: "MarketError: 7".into() };
        let answer = request.reply(Body::ActionResponse { action: String::new(), result: Err(raised.clone()) });
        let text = String::from_utf8(encode(&answer).unwrap()).unwrap();
        assert!(text.contains("user-error-response") && text.contains("exception_str"), "{text}");
        let Incoming::Message(back) = decode(text.as_bytes()).unwrap() else { panic!() };
        assert_eq!(back.body, Body::ActionResponse { action: String::new(), result: Err(raised) });
        let cancelled = RemoteError { kind: RemoteErrorKind::Cancelled, message: String::new() };
        let answer = request.reply(Body::ActionResponse { action: String::new(), result: Err(cancelled) });
        let text = String::from_utf8(encode(&answer).unwrap()).unwrap();
        assert!(text.contains(r#""error_code":3"#), "{text}");
    }

    #[test]
    fn pickle_other_versions_and_garbage_are_refused() {
        let (me, agent) = pair();
        let request = Envelope::new(me, agent, Body::ActionRequest { action: "add".into(), args: Bytes::new() });
        let mut json: Value = serde_json::from_slice(&encode(&request).unwrap()).unwrap();
        json["body"]["serialization"] = "pickle".into();
        match decode(json.to_string().as_bytes()).unwrap() {
            Incoming::Refused(answer, why) => {
                assert!(why.contains("SerializationStrategy.JSON"), "{why}");
                assert_eq!(answer.tag, request.tag);
            }
            other => panic!("{other:?}"),
        }
        json["body"]["serialization"] = "json".into();
        json["header"]["protocol_version"] = "2.0".into();
        assert!(matches!(decode(json.to_string().as_bytes()).unwrap(), Incoming::Refused(..)));
        assert!(decode(b"\x00garbage").is_err());
        // A request to a client is answered INVALID_CLIENT.
        let (me, agent) = pair();
        let to_client = Envelope::new(agent, me, Body::PingRequest);
        match decode(&encode(&to_client).unwrap()).unwrap() {
            Incoming::Refused(answer, _) => {
                assert!(String::from_utf8(encode(&answer).unwrap()).unwrap().contains(r#""error_code":4"#))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(CLOSED).unwrap(), Incoming::Closed));
    }

    #[test]
    fn keyword_arguments_become_a_map() {
        let args = arguments(Value::String("[1]".into()), Value::String(r#"{"b": 2}"#.into())).unwrap();
        #[derive(Deserialize, Debug, PartialEq)]
        struct Add {
            a: i64,
            b: i64,
        }
        let codec = crate::codec::Codec::new(crate::codec::Protocol::Academy1);
        assert_eq!(codec.decode_args::<Add>("add", &args).unwrap(), Add { a: 1, b: 2 });
        // Queued again (a restart), they are the same pargs and kargs.
        let (me, agent) = pair();
        let request = Envelope::new(me, agent, Body::ActionRequest { action: "add".into(), args: args.clone() });
        let Incoming::Message(back) = decode(&encode(&request).unwrap()).unwrap() else { panic!() };
        assert_eq!(back.body, request.body);
    }

    #[test]
    fn results_split_and_errors_read_back() {
        let ok: Result<u32, String> = Ok(5);
        let bytes = serde_json::to_vec(&ok).unwrap();
        assert_eq!(split_result(&bytes).unwrap().unwrap(), &b"5"[..]);
        let err: Result<u32, String> = Err("out".into());
        let bytes = serde_json::to_vec(&err).unwrap();
        let error = split_result(&bytes).unwrap().unwrap_err();
        let text = raised_text("String", &error);
        assert_eq!(text, r#"String: "out""#);
        assert_eq!(raised_value::<String>("String", &text).unwrap(), "out");
        // A Python exception whose text happens to parse is not typed.
        assert_eq!(raised_value::<u32>("u32", "ValueError: 3"), None);
        assert_eq!(raised_value::<u32>("u32", "u32: 3"), Some(3));
        assert_eq!(raised_value::<u32>("u32", "u32x: 3"), None);
    }
}
