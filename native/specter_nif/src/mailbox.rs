//! Sending messages to Erlang processes from any thread.
//!
//! The async runtime answers callers and owners from its worker threads with a thread-local,
//! reused `OwnedEnv`. `OwnedEnv::send_and_clear` panics on a scheduler thread, so a send
//! attempted there (a destructor run by the garbage collector, say) is moved to the runtime.

use std::cell::RefCell;

use rustler::{Env, LocalPid, OwnedEnv, Term};

use specter_core::runtime;

thread_local! {
    static ENV: RefCell<Option<OwnedEnv>> = const { RefCell::new(None) };
}

/// Sends the term `build` makes to `pid`. Never blocks, never panics; a dead pid is ignored.
pub fn send<F>(pid: LocalPid, build: F)
where
    F: for<'a> FnOnce(Env<'a>) -> Term<'a> + Send + 'static,
{
    if rustler::thread::is_scheduler_thread() {
        if let Ok(rt) = runtime::global() {
            rt.spawn(async move { send_now(pid, build) });
        }
        return;
    }
    let _ = send_now(pid, build);
}

/// As `send/2`, from a runtime thread only; says whether `pid` was alive to receive it.
/// On a scheduler thread the message goes out later and the answer is `true`.
pub fn send_alive<F>(pid: LocalPid, build: F) -> bool
where
    F: for<'a> FnOnce(Env<'a>) -> Term<'a> + Send + 'static,
{
    if rustler::thread::is_scheduler_thread() {
        send(pid, build);
        return true;
    }
    send_now(pid, build)
}

fn send_now<F>(pid: LocalPid, build: F) -> bool
where
    F: for<'a> FnOnce(Env<'a>) -> Term<'a>,
{
    ENV.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let env = slot.get_or_insert_with(OwnedEnv::new);
            env.send_and_clear(&pid, build).is_ok()
        }
        Err(_) => {
            let mut env = OwnedEnv::new();
            env.send_and_clear(&pid, build).is_ok()
        }
    })
}

/// The process an object's events go to; `controlling_process/3` hands it to another.
pub struct Owner(std::sync::Mutex<LocalPid>);

impl Owner {
    pub fn new(pid: LocalPid) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::Mutex::new(pid)))
    }

    pub fn pid(&self) -> LocalPid {
        *specter_core::registry::lock(&self.0)
    }

    pub fn set(&self, pid: LocalPid) {
        *specter_core::registry::lock(&self.0) = pid;
    }

    /// Sends the term `build` makes to the owner (see [`send`]).
    pub fn send<F>(&self, build: F)
    where
        F: for<'a> FnOnce(Env<'a>) -> Term<'a> + Send + 'static,
    {
        send(self.pid(), build);
    }
}
