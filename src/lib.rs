#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod agent;
mod behavior;
mod caller;
mod codec;
mod description;
mod error;
mod exchange;
mod foreign;
mod handle;
mod identifier;
mod json;
mod launcher;
mod mailbox;
mod message;
mod panic;
mod peer;

pub use agent::{Agent, AgentExit, DEFAULT_MAX_CONCURRENCY, MAX_WAITING};
pub use behavior::{Behavior, Handles};
pub use caller::AgentContext;
pub use caller::{Client, DEFAULT_LIVENESS_TIMEOUT};
pub use description::{ActionInfo, Description, Parameter};
pub use error::{ActionError, Error, Rejection};
pub use exchange::{
    Discovery, Exchange, ExchangeBuilder, MailboxInfo, MailboxStatus, Peeked, Protocol, Rejections, WhenInactive,
    SECRET_ENV,
};
pub use foreign::ForeignAgent;
pub use handle::{RemoteHandle, UnboundRemoteHandle};
pub use identifier::{AgentId, ClientId, EntityId, IdError, Role};
pub use launcher::{Launcher, Outcome};
pub use message::{RemoteError, RemoteErrorKind};

/// Makes an Actix actor an agent: its `#[action]` methods become actions
/// that other processes call through a typed [`RemoteHandle`].
///
/// Put it on the actor's own impl block. For each `#[action]` method it
/// writes a message and its `Handler`, the [`Behavior`] (name, actions,
/// dispatch) and a method of the same name on `RemoteHandle<Self>`, so a
/// call reads `market.place(order).await?`. The actor stays an ordinary
/// Actix actor: its other methods, `Handler`s and `Actor` impl are its own.
///
/// - `#[agent(name = "market")]` names the behavior for discovery (default:
///   the type's name, so moving the code does not change it);
///   `implements(Parent, ...)` adds behaviors it can stand in for.
/// - An action's arguments and result travel as MessagePack: owned serde
///   types. A result written `Result<T, E>` (two arguments, not an alias)
///   reaches the caller as `Result<T, ActionError<E>>` (the action's own
///   error, or why the call failed); any other `T` as `Result<T, Error>`.
/// - The handle's methods are public whatever the action method's
///   visibility: anyone on the exchange can call an action anyway.
/// - `#[action(name = "...")]` names it on the wire (default: the method's
///   name); two actions with one name do not compile.
/// - `#[action(one_way)]` on a method that returns nothing: the caller
///   returns once the exchange has the request, without waiting for it.
/// - A method may also take `ctx: &AgentContext<Self>` (the agent's id, own
///   handle, exchange), `#[caller] who: &EntityId` (who called) and
///   `ctx: &mut Context<Self>` (Actix's); callers do not pass those.
/// - An `async fn` action runs concurrently and cannot borrow the actor
///   (Actix lends `self` only until a handler returns): it takes no `self`,
///   and `AgentContext<Self>` / `EntityId` by value. A sync method may also
///   return `ResponseFuture<T>` or `ResponseActFuture<Self, T>`.
/// - The generated code names this crate `actix_academy` (do not rename it
///   in `Cargo.toml`); an action cannot be generic or under `#[cfg]`.
///
/// ```
/// use actix_academy::prelude::*;
///
/// #[derive(Default)]
/// struct Counter { count: i64 }
/// impl Actor for Counter { type Context = Context<Self>; }
///
/// #[agent(name = "counter")]
/// impl Counter {
///     /// Adds `by`, returns the new count.
///     #[action]
///     fn increment(&mut self, by: i64) -> i64 {
///         self.count += by;
///         self.count
///     }
///
///     #[action]
///     fn divide(&mut self, by: i64) -> Result<i64, String> {
///         if by == 0 { return Err("division by zero".into()) }
///         self.count /= by;
///         Ok(self.count)
///     }
///
///     #[action]
///     fn whoami(&self, ctx: &AgentContext<Self>, #[caller] caller: &EntityId) -> String {
///         format!("{} called by {caller}", ctx.id())
///     }
///
///     #[action]
///     async fn echo(text: String) -> String {
///         text
///     }
/// }
///
/// # #[actix::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let exchange = Exchange::local();
/// let agent = Agent::start(Counter::default(), &exchange, Some("counter")).await?;
/// let counter = exchange.get_handle(agent.id().clone()).bind_as_client(&exchange).await?;
/// assert_eq!(counter.increment(5).await?, 5);
/// assert!(matches!(counter.divide(0).await, Err(ActionError::Action(e)) if e == "division by zero"));
/// assert_eq!(counter.echo("hi".into()).await?, "hi");
/// assert!(counter.whoami().await?.starts_with("AgentId<counter> called by ClientId<"));
/// assert_eq!(counter.describe().await?.actions.len(), 4);
/// agent.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub use actix_academy_macros::agent;

/// Marks a method of an [`#[agent]`](agent) impl block as an action (see
/// there); anywhere else it is an error.
pub use actix_academy_macros::action;

/// `#[derive(Actor)]` writes `impl Actor for T { type Context =
/// Context<Self>; }`, the actor most behaviors are (write the impl yourself
/// for `started`, `stopped` or another context).
///
/// ```
/// use actix_academy::prelude::*;
///
/// #[derive(Actor, Default)]
/// struct Counter { count: i64 }
///
/// #[agent]
/// impl Counter {
///     #[action]
///     fn increment(&mut self) -> i64 { self.count += 1; self.count }
/// }
/// ```
pub use actix_academy_macros::Actor;

/// The reference, kept beside the code (the same pages as `docs/*.md`; their
/// examples run as doc tests).
pub mod docs {
    #[doc = include_str!("../docs/design.md")]
    pub mod design {}
    #[doc = include_str!("../docs/guarantees.md")]
    pub mod guarantees {}
    #[doc = include_str!("../docs/across_machines.md")]
    pub mod across_machines {}
    #[doc = include_str!("../docs/academy_interop.md")]
    pub mod academy_interop {}
    #[doc = include_str!("../docs/operating.md")]
    pub mod operating {}
    #[doc = include_str!("../docs/performance.md")]
    pub mod performance {}
}

/// Wire-level types: envelopes, message bodies, raw mailboxes, the base32
/// form of ids. An agent program does not need them; tools and tests that
/// speak to mailboxes directly do.
pub mod wire {
    pub use crate::identifier::{base32_to_uuid, uuid_to_base32};
    pub use crate::mailbox::Mailbox;
    pub use crate::message::{Body, Envelope, TraceContext, WireError, PROTOCOL_VERSION};
    pub use crate::peer::DEFAULT_MAX_FRAME_LEN;
}

/// What the code `#[agent]` and `behavior!` write refers to; not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::behavior::{
        action_name, assert_behavior_name, assert_distinct, dispatch, dispatch_async, ActionFuture, Invocation,
        NoAction, NotAnAction, StopAgent, Update,
    };
    pub use crate::caller::{Caller, Calls};
    pub use crate::handle::Bound;
    pub use actix;
}

/// Everything an agent program needs: this crate's types and macros, the
/// Actix items an actor is written with, and serde's traits and derives
/// (the derives need `serde` among your dependencies).
pub mod prelude {
    pub use crate::{
        action, agent, behavior, ActionError, Actor, Agent, AgentContext, AgentExit, AgentId, Behavior, Client,
        ClientId, Discovery, EntityId, Error, Exchange, Launcher, RemoteHandle, UnboundRemoteHandle,
    };
    pub use actix::{
        Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, MessageResult,
        ResponseActFuture, ResponseFuture, WrapFuture,
    };
    pub use serde::{Deserialize, Serialize};
}
