#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod agent;
mod behavior;
mod error;
pub mod exchange;
mod handle;
mod identifier;
mod launcher;
mod mailbox;
mod message;
mod peer;

pub use agent::{Agent, AgentContext, AgentExit, DEFAULT_MAX_CONCURRENCY, MAX_WAITING};
#[doc(hidden)]
pub use behavior::{action_name as __action_name, call as __call};
pub use behavior::{ActionFuture, Behavior, Handles, StopAgent};
pub use error::{Error, Rejection};
pub use exchange::{
    Exchange, HybridExchange, HybridExchangeBuilder, LocalExchange, MailboxStatus, Rejections, WhenInactive, SECRET_ENV,
};
pub use handle::{Client, RemoteHandle, UnboundRemoteHandle, DEFAULT_LIVENESS_TIMEOUT};
pub use identifier::{base32_to_uuid, uuid_to_base32, AgentId, ClientId, EntityId, IdError, Role};
pub use launcher::{Launcher, Outcome};
pub use mailbox::Mailbox;
pub use message::{Body, Envelope, RemoteError, RemoteErrorKind, WireError, PROTOCOL_VERSION};
pub use peer::DEFAULT_MAX_FRAME_LEN;

/// Everything an agent program needs: this crate's types, the `behavior!`
/// macro, Actix's prelude, and serde's derives.
pub mod prelude {
    pub use crate::{
        behavior, Agent, AgentContext, AgentExit, AgentId, Behavior, ClientId, EntityId, Error, Exchange,
        HybridExchange, Launcher, RemoteHandle, UnboundRemoteHandle,
    };
    pub use actix::prelude::*;
    pub use serde::{Deserialize, Serialize};
}
