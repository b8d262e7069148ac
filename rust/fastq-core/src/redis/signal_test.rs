//! For tests: a signal to the calling thread while it waits in a read, with a handler installed
//! the way Python installs its own (no `SA_RESTART`), so the read fails with EINTR unless the code
//! under test begins it again.

use std::thread::{self, JoinHandle};
use std::time::Duration;

extern "C" fn ignore(_: libc::c_int) {}

/// Sends SIGUSR1 (handled, doing nothing) to the calling thread after `delay`; join the handle
/// before the thread ends.
pub fn interrupt_me_after(delay: Duration) -> JoinHandle<()> {
    // SAFETY: a zeroed sigaction is valid; `ignore` is async-signal-safe (it does nothing).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    // SAFETY: no arguments.
    let me = unsafe { libc::pthread_self() };
    thread::spawn(move || {
        thread::sleep(delay);
        // SAFETY: the caller joins this thread before its own ends, so `me` is alive.
        assert_eq!(unsafe { libc::pthread_kill(me, libc::SIGUSR1) }, 0);
    })
}
