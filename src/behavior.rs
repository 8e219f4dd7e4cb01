//! Behaviors: ordinary Actix actors that agents run. A behavior names itself
//! for discovery and lists the actions remote peers may call; the
//! [`behavior!`](crate::behavior!) macro writes both, plus the dispatch table.

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Context, Handler, Message};
use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::message::{RemoteError, RemoteErrorKind};

/// The outcome of dispatching one action: the encoded result, or why not.
pub type ActionFuture = LocalBoxFuture<'static, Result<bytes::Bytes, RemoteError>>;

/// A kind of agent: an actor known to the exchange by a stable name.
///
/// Implement it with [`behavior!`](crate::behavior!) rather than by hand.
pub trait Behavior: Actor<Context = Context<Self>> + Handler<StopAgent> {
    /// The stable name (module path and type) other processes discover it by.
    fn name() -> &'static str;

    /// Its own name followed by the names it declares it implements, most
    /// specific first. `discover` with subclasses matches any of them.
    fn lineage() -> Vec<&'static str> {
        vec![Self::name()]
    }

    /// Runs the action called `action` with MessagePack `args`; `None` if
    /// the behavior declares no such action.
    fn dispatch(addr: &Addr<Self>, action: &str, args: &[u8]) -> Option<ActionFuture>;
}

/// `B: Handles<M>` says agent `B` serves action `M` to remote callers.
/// A remote handle offers `action(M)` only when this holds, so calling an
/// action the behavior does not handle does not compile.
pub trait Handles<M>: Behavior + Handler<M>
where
    M: Message + Send + Serialize + DeserializeOwned + 'static,
    M::Result: Send + Serialize + DeserializeOwned,
{
    /// The action's name on the wire.
    fn action_name() -> &'static str;
}

/// Asks a behavior's actor to stop; sent by the agent runtime on shutdown.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopAgent;

/// The last path segment of a type as written (`a::b::Add` -> `Add`).
#[doc(hidden)]
pub fn action_name(written: &'static str) -> &'static str {
    let name = written.rsplit("::").next().unwrap_or(written);
    name.trim()
}

/// Decodes `args` as `M`, sends it to the actor, encodes the reply.
#[doc(hidden)]
pub fn call<B, M>(addr: &Addr<B>, args: &[u8]) -> ActionFuture
where
    B: Handles<M>,
    B::Context: ToEnvelope<B, M>,
    M: Message + Send + Serialize + DeserializeOwned + 'static,
    M::Result: Send + Serialize + DeserializeOwned,
{
    let message: M = match rmp_serde::from_slice(args) {
        Ok(message) => message,
        Err(e) => {
            return future::ready(Err(RemoteError {
                kind: RemoteErrorKind::BadPayload,
                message: format!("arguments of {} do not decode: {e}", B::action_name()),
            }))
            .boxed_local()
        }
    };
    let reply = addr.send(message);
    async move {
        let result = reply.await.map_err(|_| RemoteError {
            kind: RemoteErrorKind::AgentStopped,
            message: "the agent stopped before answering".into(),
        })?;
        crate::message::encode_payload(&result).map_err(|e| RemoteError {
            kind: RemoteErrorKind::Internal,
            message: format!("the result does not encode: {e}"),
        })
    }
    .boxed_local()
}

/// Makes an actor a behavior: names it for discovery (module path + type),
/// lists the actions remote peers may call, and, optionally, the behaviors
/// it implements (its lineage, for `discover` with subclasses).
///
/// ```
/// use actix::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default)]
/// struct Counter { count: i64 }
/// impl Actor for Counter { type Context = Context<Self>; }
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "i64")]
/// struct Increment(i64);
///
/// impl Handler<Increment> for Counter {
///     type Result = i64;
///     fn handle(&mut self, m: Increment, _: &mut Context<Self>) -> i64 {
///         self.count += m.0;
///         self.count
///     }
/// }
///
/// actix_academy::behavior!(Counter { actions: [Increment] });
///
/// use actix_academy::Behavior;
/// assert!(Counter::name().ends_with("::Counter"));
/// ```
#[macro_export]
macro_rules! behavior {
    ($behavior:ident { actions: [$($action:ty),* $(,)?] $(, implements: [$($parent:ty),* $(,)?])? $(,)? }) => {
        impl $crate::Behavior for $behavior {
            fn name() -> &'static str {
                concat!(module_path!(), "::", stringify!($behavior))
            }

            fn lineage() -> Vec<&'static str> {
                #[allow(unused_mut)]
                let mut lineage = vec![<Self as $crate::Behavior>::name()];
                $($(
                    for name in <$parent as $crate::Behavior>::lineage() {
                        if !lineage.contains(&name) {
                            lineage.push(name);
                        }
                    }
                )*)?
                lineage
            }

            fn dispatch(
                addr: &::actix::Addr<Self>,
                action: &str,
                args: &[u8],
            ) -> Option<$crate::ActionFuture> {
                $(
                    if action == <Self as $crate::Handles<$action>>::action_name() {
                        return Some($crate::__call::<Self, $action>(addr, args));
                    }
                )*
                let _ = (addr, args);
                None
            }
        }

        $(
            impl $crate::Handles<$action> for $behavior {
                fn action_name() -> &'static str {
                    $crate::__action_name(stringify!($action))
                }
            }
        )*

        impl ::actix::Handler<$crate::StopAgent> for $behavior {
            type Result = ();
            fn handle(&mut self, _: $crate::StopAgent, ctx: &mut ::actix::Context<Self>) {
                ::actix::ActorContext::stop(ctx);
            }
        }
    };
}
