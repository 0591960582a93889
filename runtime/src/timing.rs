//! Watching scripts run, for the server's profile: an observer set around
//! an operation hears each script function start and finish, with the
//! time it took. The clock read here is the machine's, for operators only:
//! it never reaches game logic, which sees only the injected `now`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hears every script function the rules engine calls (hooks, custom
/// actions, item uses, raid checks), named `module::function`.
pub trait ScriptObserver {
    fn started(&self, function: &str);
    fn finished(&self, function: &str, took: Duration);
}

thread_local! {
    static OBSERVER: RefCell<Option<Arc<dyn ScriptObserver>>> = const { RefCell::new(None) };
}

/// Puts the previous observer back, even if `f` panics.
struct Restore(Option<Arc<dyn ScriptObserver>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        OBSERVER.with(|o| *o.borrow_mut() = previous);
    }
}

/// Runs `f` (synchronous, on this thread) with `observer` hearing its scripts.
pub fn observed<T>(observer: Arc<dyn ScriptObserver>, f: impl FnOnce() -> T) -> T {
    let previous = OBSERVER.with(|o| o.borrow_mut().replace(observer));
    let _restore = Restore(previous);
    f()
}

/// Runs one script function, telling the observer if there is one.
pub(crate) fn script<T>(name: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
    let Some(observer) = OBSERVER.with(|o| o.borrow().clone()) else { return f() };
    let name = name();
    observer.started(&name);
    let started = Instant::now();
    let out = f();
    observer.finished(&name, started.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    impl ScriptObserver for Heard {
        fn started(&self, function: &str) {
            self.0.lock().unwrap().push(format!("start {function}"));
        }
        fn finished(&self, function: &str, _: Duration) {
            self.0.lock().unwrap().push(format!("end {function}"));
        }
    }

    #[test]
    fn only_scripts_inside_observed_are_heard() {
        script(|| "m::before".into(), || ());
        let heard = Arc::new(Heard::default());
        let n = observed(heard.clone(), || script(|| "m::f".into(), || 7));
        assert_eq!(n, 7);
        script(|| "m::after".into(), || ());
        assert_eq!(*heard.0.lock().unwrap(), ["start m::f", "end m::f"]);
    }
}
