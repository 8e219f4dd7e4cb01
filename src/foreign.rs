//! Agents written in another language, such as Python Academy 1.0 agents on
//! an exchange built with [`Protocol::Academy1`](crate::Protocol::Academy1):
//! Rust knows neither their actions nor their types, so a handle calls them
//! by action name, with serde values for arguments and result.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::handle::RemoteHandle;

/// Stands for an agent this program has no type for (a Python agent): its
/// handle offers [`call`](RemoteHandle::call) by action name. Discover one
/// by its behavior's dotted name with
/// [`Exchange::discover_by_name`](crate::Exchange::discover_by_name), then
/// type the id with [`AgentId::from_entity`](crate::AgentId::from_entity).
///
/// ```no_run
/// # async fn demo(exchange: actix_academy::Exchange) -> Result<(), Box<dyn std::error::Error>> {
/// use actix_academy::{AgentId, Discovery, ForeignAgent};
/// let found = exchange.discover_by_name("model.Forecaster", Discovery::new()).await?;
/// let id = AgentId::<ForeignAgent>::from_entity(found[0].clone())?;
/// let forecaster = exchange.get_handle(id).bind_as_client(&exchange).await?
///     // A Python agent that cannot encode its result never answers.
///     .with_timeout(Some(std::time::Duration::from_secs(30)));
/// let rain: f64 = forecaster.call("predict", ("Lyon", 3)).await?;
/// # let _ = rain; Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct ForeignAgent;

impl actix::Actor for ForeignAgent {
    type Context = actix::Context<Self>;
}

crate::behavior!(ForeignAgent { name: "academy.agent.Agent", actions: [] });

impl RemoteHandle<ForeignAgent> {
    /// Calls the agent's action `action` with `args`, a tuple of its
    /// positional arguments (`()` for none, `(x,)` for one), and decodes
    /// its result as `R`. An exception the action raised is
    /// [`Error::Remote`] with [`RemoteErrorKind::Raised`](crate::RemoteErrorKind::Raised)
    /// and the exception's text; Academy's own refusals have their own
    /// kinds (`Terminated`, `Cancelled`, ...).
    pub async fn call<R: DeserializeOwned>(&self, action: &str, args: impl Serialize) -> Result<R, Error> {
        self.caller().__call(action, &args).await
    }

    /// [`call`](Self::call) with keyword arguments too: `kwargs` is a map
    /// or a struct whose fields are the parameters' names
    /// (`serde_json::json!({"horizon": 3})`, say).
    pub async fn call_with_keywords<R: DeserializeOwned>(
        &self,
        action: &str,
        args: impl Serialize,
        kwargs: impl Serialize,
    ) -> Result<R, Error> {
        let keywords = crate::json::with_keywords(&args, &kwargs)?;
        self.caller().__call(action, &keywords).await
    }
}
