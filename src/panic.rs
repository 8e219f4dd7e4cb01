//! Panics in actions, told to their callers. An `async fn` action runs in
//! the runtime's future, where its panic is caught; a sync action runs in
//! the behavior's actor, whose task ends with the panic, so a hook records
//! the panic's message on the thread where it happened, for the runtime
//! (on the same arbiter thread) to read when its request comes back
//! unanswered.

use std::any::Any;
use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    /// How many panics this thread has seen, and the last one's message.
    static LAST: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// Installs the hook that records panics (once; the previous hook still runs).
pub(crate) fn watch() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = message(info.payload());
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            LAST.with(|last| {
                let mut last = last.borrow_mut();
                last.0 += 1;
                last.1 = format!("{message}{at}");
            });
            previous(info);
        }));
    });
}

/// A mark of this thread's panics so far, to compare with later.
pub(crate) fn mark() -> u64 {
    LAST.with(|last| last.borrow().0)
}

/// The message of the last panic on this thread, if one happened since `mark`.
pub(crate) fn since(mark: u64) -> Option<String> {
    LAST.with(|last| {
        let last = last.borrow();
        (last.0 > mark).then(|| last.1.clone())
    })
}

/// A panic's payload as text.
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic with a payload that is not text".to_owned(),
    }
}
