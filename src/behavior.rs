//! Behaviors: ordinary Actix actors that agents run. A behavior names itself
//! for discovery and lists the actions remote peers may call. The
//! [`agent`](crate::agent) attribute writes all of it from the actor's
//! methods; [`behavior!`](crate::behavior!) does the same for hand-written
//! messages and handlers. Both go through [`dispatch`] here.

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Context, Handler, Message};
use futures::future::{self, LocalBoxFuture};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::caller::{AgentContext, Calls};
use crate::description::{ActionInfo, Description};
use crate::error::Error;
use crate::exchange::{Discovery, Exchange};
use crate::identifier::{AgentId, EntityId};
use crate::message::{RemoteError, RemoteErrorKind};

/// The outcome of dispatching one action: the encoded result, or why not.
pub type ActionFuture = LocalBoxFuture<'static, Result<bytes::Bytes, RemoteError>>;

/// A kind of agent: an actor known to the exchange by a stable name, with
/// the actions remote callers may call.
///
/// Written by [`#[agent]`](crate::agent) or [`behavior!`](crate::behavior!),
/// never by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an agent's behavior",
    label = "not a behavior",
    note = "put `#[actix_academy::agent]` on `impl {Self} {{ ... }}` (with `#[action]` on the methods remote callers may call), or declare it with `actix_academy::behavior!({Self} {{ actions: [...] }})`",
    note = "if it is declared and this still shows, check that `actix` is a dependency of your crate (`cargo add actix`)"
)]
pub trait Behavior: Actor<Context = Context<Self>> + Handler<StopAgent> + Handler<Update<Self>> {
    /// The typed call methods a [`RemoteHandle<Self>`](crate::RemoteHandle)
    /// offers, one per action (through `Deref`).
    type Calls: Calls<Self>;

    /// The stable name other processes discover it by.
    fn name() -> &'static str;

    /// Its own name followed by the names it declares it implements, most
    /// specific first. Discovery with subclasses matches any of them.
    fn lineage() -> Vec<&'static str> {
        vec![Self::name()]
    }

    /// Its actions: names, parameters and result types, for tools.
    fn actions() -> &'static [ActionInfo];

    /// Runs the action called `action` with MessagePack `args`; `None` if
    /// the behavior declares no such action.
    #[doc(hidden)]
    fn dispatch(addr: &Addr<Self>, action: &str, args: &[u8], call: Invocation<Self>) -> Option<ActionFuture>;
}

/// `B: Handles<M>` says agent `B` serves the hand-written action message
/// `M` to remote callers (declared in [`behavior!`](crate::behavior!)).
/// [`RemoteHandle::action`](crate::RemoteHandle::action) accepts `M` only
/// when this holds, so calling an action the behavior does not handle does
/// not compile.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no action `{M}`",
    label = "not an action of `{Self}`",
    note = "list it in `behavior!({Self} {{ actions: [..., {M}] }})` (it needs `impl Handler<{M}> for {Self}`), or call the right agent"
)]
pub trait Handles<M>: Behavior + Handler<M>
where
    M: Message + Send + Serialize + DeserializeOwned + 'static,
    M::Result: Send + Serialize + DeserializeOwned,
{
    /// The action's name on the wire.
    fn action_name() -> &'static str;
}

/// Asks a behavior's actor to stop; sent by the agent runtime on shutdown.
#[doc(hidden)]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopAgent;

/// A change to an agent's own state, run by its actor between the messages
/// it handles: what [`AgentContext::update`] sends.
#[doc(hidden)]
pub struct Update<B>(pub(crate) Box<dyn FnOnce(&mut B) + Send>);

impl<B: 'static> Message for Update<B> {
    type Result = ();
}

impl<B> std::fmt::Debug for Update<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Update")
    }
}

impl<B> Update<B> {
    /// Runs the change on the actor (its `Handler`, which the macros write).
    pub fn apply(self, actor: &mut B) {
        (self.0)(actor)
    }
}

/// Bounds the stand-ins `#[agent]` writes for a behavior's methods that are
/// not actions: calling one through a handle names what is missing.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "this method of the behavior is not an action",
    label = "not an action: it has no `#[action]`",
    note = "put `#[action]` on the method, in the `#[agent]` impl block, to call it through a handle"
)]
pub trait NotAnAction {}

/// A message that cannot be made: see `behavior!`.
#[doc(hidden)]
#[derive(Debug, Serialize, Deserialize)]
pub enum NoAction {}

impl Message for NoAction {
    type Result = ();
}

/// What the runtime hands an action besides its arguments.
#[doc(hidden)]
#[derive(Debug)]
pub struct Invocation<B> {
    /// Who called.
    pub caller: EntityId,
    /// The agent the action runs in.
    pub context: AgentContext<B>,
}

impl Description {
    /// The description of behavior `B`.
    pub fn of<B: Behavior>() -> Self {
        Self {
            behavior: B::name().to_owned(),
            lineage: B::lineage().into_iter().map(str::to_owned).collect(),
            actions: B::actions().to_vec(),
        }
    }
}

/// The last path segment of a type as written, with its generic arguments
/// (`a::b::Add` -> `Add`, `m::Msg<x::A, B>` -> `Msg<x::A, B>`).
#[doc(hidden)]
pub const fn action_name(written: &'static str) -> &'static str {
    let bytes = written.as_bytes();
    let (mut i, mut depth, mut start) = (0, 0usize, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            b'>' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && i + 1 < bytes.len() && bytes[i + 1] == b':' => {
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    while start < bytes.len() && bytes[start] == b' ' {
        start += 1;
    }
    let (_, name) = bytes.split_at(start);
    match std::str::from_utf8(name) {
        Ok(name) => name,
        Err(_) => panic!("a suffix after an ASCII separator is UTF-8"),
    }
}

/// Fails to compile (as a const) unless `name` can name a behavior.
#[doc(hidden)]
pub const fn assert_behavior_name(name: &str) {
    let bytes = name.as_bytes();
    assert!(!bytes.is_empty(), "a behavior name is not empty");
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i] != b',', "a behavior name has no comma");
        i += 1;
    }
}

/// Fails to compile (as a const) if two names are equal.
#[doc(hidden)]
pub const fn assert_distinct(names: &[&str]) {
    let mut i = 0;
    while i < names.len() {
        let mut j = i + 1;
        while j < names.len() {
            if const_eq(names[i], names[j]) {
                panic!("two actions of one behavior have the same name: rename one of the message types");
            }
            j += 1;
        }
        if const_eq(names[i], "agent_describe") {
            panic!("the action name `agent_describe` is reserved by the runtime");
        }
        i += 1;
    }
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Decodes `args` as `A`, makes the actor's message from them (with what
/// the runtime passes), sends it, encodes the reply. Both ways of writing a
/// behavior dispatch through here.
#[doc(hidden)]
pub fn dispatch<B, A, M>(
    addr: &Addr<B>,
    action: &str,
    args: &[u8],
    call: Invocation<B>,
    make: impl FnOnce(A, Invocation<B>) -> M,
) -> ActionFuture
where
    B: Behavior + Handler<M>,
    B::Context: ToEnvelope<B, M>,
    A: DeserializeOwned,
    M: Message + Send + 'static,
    M::Result: Send + Serialize,
{
    let codec = call.context.exchange().codec();
    let args: A = match codec.decode_args(action, args) {
        Ok(args) => args,
        Err(e) => return future::ready(Err(e)).boxed_local(),
    };
    crate::panic::watch();
    let mark = crate::panic::mark();
    let reply = addr.send(make(args, call));
    let action = action.to_owned();
    async move {
        let result = reply.await.map_err(|_| match crate::panic::since(mark) {
            // The behavior's actor runs on this thread: its panic ended it.
            Some(panic) => {
                RemoteError { kind: RemoteErrorKind::Panicked, message: format!("the behavior panicked: {panic}") }
            }
            None => RemoteError {
                kind: RemoteErrorKind::AgentStopped,
                message: "the agent stopped before answering".into(),
            },
        })?;
        codec.encode_result(&action, &result)
    }
    .boxed_local()
}

/// [`dispatch`] for an `async fn` action (no `self`): its future runs in
/// the runtime's own, so cancelling the request drops it.
#[doc(hidden)]
pub fn dispatch_async<B, A, F>(
    action: &str,
    args: &[u8],
    call: Invocation<B>,
    run: impl FnOnce(A, Invocation<B>) -> F,
) -> ActionFuture
where
    B: Behavior,
    A: DeserializeOwned,
    F: std::future::Future + 'static,
    F::Output: Serialize,
{
    let codec = call.context.exchange().codec();
    crate::panic::watch();
    let mark = crate::panic::mark();
    let running = match codec.decode_args(action, args) {
        Ok(args) => run(args, call),
        Err(e) => return future::ready(Err(e)).boxed_local(),
    };
    let action = action.to_owned();
    async move {
        match std::panic::AssertUnwindSafe(running).catch_unwind().await {
            Ok(result) => codec.encode_result(&action, &result),
            Err(payload) => Err(RemoteError {
                kind: RemoteErrorKind::Panicked,
                message: format!(
                    "the action panicked: {}",
                    crate::panic::since(mark).unwrap_or_else(|| crate::panic::message(payload.as_ref()))
                ),
            }),
        }
    }
    .boxed_local()
}

/// Makes an actor with hand-written action messages a behavior: names it
/// for discovery (its type name, or `name:`), lists the actions remote
/// peers may call (each a message the actor handles, named on the wire by
/// its type's last segment), and, optionally, the behaviors it implements
/// (its lineage, for discovery with subclasses). [`#[agent]`](crate::agent)
/// writes the messages and handlers too.
///
/// ```
/// use actix_academy::prelude::*;
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
/// behavior!(Counter { name: "counter", actions: [Increment] });
///
/// assert_eq!(Counter::name(), "counter");
/// assert_eq!(Counter::actions()[0].name, "Increment");
/// ```
#[macro_export]
macro_rules! behavior {
    ($behavior:ident {
        $(name: $name:literal,)?
        actions: [$($action:ty),* $(,)?]
        $(, implements: [$($parent:ty),* $(,)?])? $(,)?
    }) => {
        const _: () = $crate::__private::assert_distinct(&[$($crate::__private::action_name(stringify!($action))),*]);
        $(const _: () = $crate::__private::assert_behavior_name($name);)?

        // Not offered in "the trait is implemented for ..." hints, so the
        // crate's own `ForeignAgent` is not suggested to users.
        #[diagnostic::do_not_recommend]
        impl $crate::Behavior for $behavior {
            type Calls = $crate::__private::Caller<Self>;

            fn name() -> &'static str {
                #[allow(unused_variables)]
                let name = stringify!($behavior);
                $(let name = $name;)?
                name
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

            fn actions() -> &'static [$crate::ActionInfo] {
                static ACTIONS: ::std::sync::OnceLock<::std::vec::Vec<$crate::ActionInfo>> = ::std::sync::OnceLock::new();
                ACTIONS.get_or_init(|| ::std::vec![$(
                    $crate::ActionInfo::new(
                        $crate::__private::action_name(stringify!($action)),
                        { const PARAMETERS: &[$crate::Parameter] = &[$crate::Parameter::new("message", stringify!($action))]; PARAMETERS },
                        ::std::any::type_name::<<$action as $crate::__private::actix::Message>::Result>(),
                        false,
                        "",
                    )
                ),*])
            }

            fn dispatch(
                addr: &$crate::__private::actix::Addr<Self>,
                action: &str,
                args: &[u8],
                call: $crate::__private::Invocation<Self>,
            ) -> Option<$crate::__private::ActionFuture> {
                $(
                    if action == $crate::__private::action_name(stringify!($action)) {
                        return Some($crate::__private::dispatch::<Self, $action, $action>(addr, action, args, call, |m, _| m));
                    }
                )*
                let _ = (addr, action, args, call);
                None
            }
        }

        // A second `Handles` impl, so that a message the behavior does not
        // handle is reported as such, not inferred to be its only action.
        impl $crate::__private::actix::Handler<$crate::__private::NoAction> for $behavior {
            type Result = ();
            fn handle(&mut self, never: $crate::__private::NoAction, _: &mut $crate::__private::actix::Context<Self>) {
                match never {}
            }
        }

        impl $crate::Handles<$crate::__private::NoAction> for $behavior {
            fn action_name() -> &'static str {
                ""
            }
        }

        $(
            impl $crate::Handles<$action> for $behavior {
                fn action_name() -> &'static str {
                    $crate::__private::action_name(stringify!($action))
                }
            }
        )*

        impl $crate::__private::actix::Handler<$crate::__private::StopAgent> for $behavior {
            type Result = ();
            fn handle(&mut self, _: $crate::__private::StopAgent, ctx: &mut $crate::__private::actix::Context<Self>) {
                $crate::__private::actix::ActorContext::stop(ctx);
            }
        }

        impl $crate::__private::actix::Handler<$crate::__private::Update<Self>> for $behavior {
            type Result = ();
            fn handle(&mut self, update: $crate::__private::Update<Self>, _: &mut $crate::__private::actix::Context<Self>) {
                update.apply(self);
            }
        }
    };
}

/// Registration and discovery by behavior type.
impl Exchange {
    /// Registers a new agent whose behavior is `B`: status ACTIVE, its
    /// lineage recorded for discovery.
    pub async fn register_agent<B: Behavior>(&self, name: Option<&str>) -> Result<AgentId<B>, Error> {
        let id = AgentId::new(name);
        self.register_agent_id(&id).await?;
        Ok(id)
    }

    /// Registers (or re-registers) an agent under an id chosen by the caller.
    pub async fn register_agent_id<B: Behavior>(&self, id: &AgentId<B>) -> Result<(), Error> {
        self.register(id, &B::lineage()).await?;
        tracing::debug!(agent = %id, behavior = B::name(), "registered agent");
        Ok(())
    }

    /// Active agents whose lineage names `B` (`B` itself, or a behavior
    /// that implements it), with the names they were registered with. On
    /// the hybrid exchange this costs O(agents indexed under `B`), not a
    /// scan of every key, and prunes the index of agents that are gone.
    pub async fn discover<B: Behavior>(&self) -> Result<Vec<AgentId<B>>, Error> {
        self.discover_with(Discovery::new()).await
    }

    /// [`discover`](Self::discover), choosing which agents:
    /// `Discovery::new().exact().include_inactive()`.
    pub async fn discover_with<B: Behavior>(&self, which: Discovery) -> Result<Vec<AgentId<B>>, Error> {
        let found = self.discover_by_name(B::name(), which).await?;
        Ok(found.into_iter().map(AgentId::from_entity).collect::<Result<_, _>>()?)
    }
}
