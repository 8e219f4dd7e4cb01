//! How a behavior describes itself: its actions, their parameters and
//! results, as [`Behavior::actions`](crate::Behavior::actions) lists them
//! and [`RemoteHandle::describe`](crate::RemoteHandle::describe) asks an
//! agent for them. Plain data, below everything that runs behaviors (the
//! Academy 1.0 codec maps keyword arguments with it).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The action name the runtime answers with the agent's [`Description`].
pub(crate) const DESCRIBE: &str = "agent_describe";

/// One action of a behavior, as [`Behavior::actions`](crate::Behavior::actions) and
/// [`RemoteHandle::describe`](crate::RemoteHandle::describe) list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionInfo {
    /// Its name on the wire.
    pub name: Cow<'static, str>,
    /// Its arguments, in order.
    pub parameters: Cow<'static, [Parameter]>,
    /// The type of its result, as written in Rust.
    pub result: Cow<'static, str>,
    /// The caller does not wait for a result.
    pub one_way: bool,
    /// Its doc comment.
    pub doc: Cow<'static, str>,
    /// For an action whose result is `Result<T, E>`: `E` as written.
    #[serde(default)]
    pub error: Option<Cow<'static, str>>,
}

impl ActionInfo {
    /// An action's description.
    pub const fn new(
        name: &'static str,
        parameters: &'static [Parameter],
        result: &'static str,
        one_way: bool,
        doc: &'static str,
    ) -> Self {
        Self {
            name: Cow::Borrowed(name),
            parameters: Cow::Borrowed(parameters),
            result: Cow::Borrowed(result),
            one_way,
            doc: Cow::Borrowed(doc),
            error: None,
        }
    }

    /// An action whose result is a `Result` with errors of type `error`.
    pub const fn fallible(
        name: &'static str,
        parameters: &'static [Parameter],
        result: &'static str,
        doc: &'static str,
        error: &'static str,
    ) -> Self {
        Self {
            name: Cow::Borrowed(name),
            parameters: Cow::Borrowed(parameters),
            result: Cow::Borrowed(result),
            one_way: false,
            doc: Cow::Borrowed(doc),
            error: Some(Cow::Borrowed(error)),
        }
    }
}

/// One argument of an action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    /// Its name in the method.
    pub name: Cow<'static, str>,
    /// Its type, as written in Rust.
    pub ty: Cow<'static, str>,
}

impl Parameter {
    /// An argument's description.
    pub const fn new(name: &'static str, ty: &'static str) -> Self {
        Self { name: Cow::Borrowed(name), ty: Cow::Borrowed(ty) }
    }
}

/// What an agent says of itself when asked to describe itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// Its behavior's name.
    pub behavior: String,
    /// Its behavior's lineage, most specific first.
    pub lineage: Vec<String>,
    /// Its actions.
    pub actions: Vec<ActionInfo>,
}
