//! What the exchange needs to know about a behavior: the name it is
//! discovered by, and the lineage of names it answers to.

/// A kind of agent, known to the exchange by a stable name.
///
/// ```
/// use actix_academy::Behavior;
/// struct Counter;
/// impl Behavior for Counter {
///     fn name() -> &'static str { "demo::Counter" }
/// }
/// assert_eq!(Counter::lineage(), ["demo::Counter"]);
/// ```
pub trait Behavior: 'static {
    /// The stable name (module path and type) other processes discover it by.
    fn name() -> &'static str;

    /// Its own name followed by the names it declares it implements, most
    /// specific first. `discover` with subclasses matches any of them.
    fn lineage() -> Vec<&'static str> {
        vec![Self::name()]
    }
}
