//! Keeps process signals off a thread while it blocks in broker I/O.
//!
//! A SIGTERM landing in the middle of a `BRPOP` read makes the read fail with EINTR (sockets with
//! a receive timeout are never restarted), which would look like a broken connection and could
//! drop a reply carrying a popped message. Blocked signals stay pending and are delivered the
//! moment the guard is dropped, so Python's handlers still run, at most one fetch timeout later.

#[cfg(unix)]
pub struct DeferSignals {
    previous: libc::sigset_t,
}

#[cfg(unix)]
impl DeferSignals {
    pub fn new() -> Self {
        // SAFETY: sigset_t is plain data initialised by sigemptyset; pthread_sigmask only reads
        // `set` and writes `previous`, both valid for the call.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGQUIT,
                libc::SIGHUP,
                libc::SIGCHLD,
                libc::SIGALRM,
                libc::SIGUSR1,
                libc::SIGUSR2,
            ] {
                libc::sigaddset(&mut set, sig);
            }
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous);
            DeferSignals { previous }
        }
    }
}

#[cfg(unix)]
impl Drop for DeferSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on this same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

#[cfg(not(unix))]
pub struct DeferSignals;

#[cfg(not(unix))]
impl DeferSignals {
    pub fn new() -> Self {
        DeferSignals
    }
}
