//! A time limit per integration test. libtest has none, so one test that hangs holds the whole
//! CI run until the CI's own deadline and says nothing about where it hung. A test that calls
//! [`watch_this_test`] (the harness does, when it starts a Kafka or an engine) and runs longer
//! than the limit ends the test binary instead: its name, every thread's backtrace (gdb, when
//! installed) and exit status 101.
//!
//! The limit is `CITYBRAIN_TEST_LIMIT_SECS` seconds (default 600: the longest test takes about
//! two minutes on a loaded CI machine).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, Once, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// What runs now: test thread -> (test name, started).
static RUNNING: Mutex<Option<HashMap<ThreadId, (String, Instant)>>> = Mutex::new(None);
static WATCHDOG: Once = Once::new();

thread_local! {
    /// Set while this thread's test is watched; dropped (unwatching it) when the thread ends.
    static WATCHED: RefCell<Option<Watched>> = const { RefCell::new(None) };
}

struct Watched(ThreadId);

impl Drop for Watched {
    fn drop(&mut self) {
        running(|tests| tests.remove(&self.0));
    }
}

fn running<T>(f: impl FnOnce(&mut HashMap<ThreadId, (String, Instant)>) -> T) -> T {
    let mut tests = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    f(tests.get_or_insert_with(HashMap::new))
}

/// Puts the calling test under the time limit, from its first call on (later calls in the same
/// test change nothing). libtest runs each test on a thread named after it, so the name is
/// the thread's.
pub fn watch_this_test() {
    WATCHED.with(|watched| {
        let mut watched = watched.borrow_mut();
        if watched.is_some() {
            return;
        }
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("(unnamed test thread)").to_string();
        running(|tests| tests.insert(thread.id(), (name, Instant::now())));
        *watched = Some(Watched(thread.id()));
    });
    WATCHDOG.call_once(|| {
        let limit = std::env::var("CITYBRAIN_TEST_LIMIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(600), Duration::from_secs);
        let _ = std::thread::Builder::new()
            .name("test-watchdog".into())
            .spawn(move || watch(limit));
    });
}

fn watch(limit: Duration) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let overdue: Vec<String> = running(|tests| {
            tests
                .values()
                .filter(|(_, started)| started.elapsed() > limit)
                .map(|(name, _)| name.clone())
                .collect()
        });
        if overdue.is_empty() {
            continue;
        }
        say(&format!(
            "test watchdog: {} ran longer than {} s; every thread's backtrace follows, then the \
             test binary exits (CITYBRAIN_TEST_LIMIT_SECS sets the limit)",
            overdue.join(", "),
            limit.as_secs()
        ));
        print_backtraces();
        std::process::exit(101);
    }
}

/// gdb prints every thread's stack of this process (to the test's output).
fn print_backtraces() {
    let pid = std::process::id().to_string();
    let dumped = std::process::Command::new("gdb")
        .args(["-p", &pid, "-batch", "-nx"])
        .args([
            "-ex",
            "set print thread-events off",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(std::process::Stdio::null())
        .status();
    if !matches!(dumped, Ok(status) if status.success()) {
        say(&format!(
            "test watchdog: no backtraces (gdb missing, or ptrace not allowed: {dumped:?})"
        ));
    }
}

/// Writes a line to stderr itself: `eprintln!` in a thread a test started goes to the test's
/// captured output, which nobody prints when the binary exits.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_test_is_listed_until_its_thread_ends() {
        let id = std::thread::spawn(|| {
            watch_this_test();
            watch_this_test();
            let id = std::thread::current().id();
            assert!(running(|tests| tests.contains_key(&id)));
            id
        })
        .join()
        .expect("thread");
        assert!(!running(|tests| tests.contains_key(&id)));
    }
}
