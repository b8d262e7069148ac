//! The publisher's own connection to a plain-TCP Redis (`redis://host:port`): commands packed by
//! the `redis` crate, written with `TCP_NODELAY`, and the replies awaited first by polling the
//! socket for at most [`SPIN`], then by a blocking read.
//!
//! Why: a `.delay()` is one round trip, and on an idle VM a reader asleep in `recv` is woken
//! tens of µs after Redis has answered (its vCPU was halted; bench/RESULTS.md: ~70 µs per `LPUSH`
//! blocking against ~30 µs polling). Polling costs at most [`SPIN`] of client CPU per call, and
//! yields the core between polls so a Redis on the same core is not starved; a reply that takes
//! longer (a busy or distant Redis) is awaited asleep, as before. TLS and unix sockets keep the `redis`
//! crate's connection, which does not lend its socket.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ::redis::{Parser, Pipeline, RedisConnectionInfo, RedisError, RedisResult, Value};

use super::connection::COMMAND_TIMEOUT;

/// How long a reply is polled for before the reader sleeps: above a loopback or same-rack round
/// trip to an idle Redis (~30 µs here), well below a scheduler's wake-up cost on a loaded host.
pub const SPIN: Duration = Duration::from_micros(50);
/// How long `close` waits for the replies still owed.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A plain-TCP address the spin socket can serve: `Some` for `redis://host:port`, `None` for TLS
/// and unix sockets.
pub fn plain_tcp(info: &::redis::ConnectionInfo) -> Option<(String, u16)> {
    match info.addr() {
        ::redis::ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
        _ => None,
    }
}

pub struct SpinSocket {
    stream: TcpStream,
    /// Holds bytes read past a reply, for the next one.
    parser: Parser,
    /// Replies owed to commands sent without waiting (`send_unread`); read before the next call.
    unread: usize,
}

impl SpinSocket {
    /// Connects within `timeout` and sets the connection up as the `redis` crate does: `AUTH`
    /// (with the user name when given), `SELECT` a db other than 0, then `CLIENT SETNAME`.
    pub fn open(
        (host, port): (&str, u16),
        settings: &RedisConnectionInfo,
        client_name: &str,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let mut last = None;
        let mut stream = None;
        for addr in (host, port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} resolves to no address"),
                )
                .into())
            }
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
        let mut socket = SpinSocket {
            stream,
            parser: Parser::new(),
            unread: 0,
        };
        let mut setup = ::redis::pipe();
        if let Some(password) = settings.password() {
            let auth = setup.cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
        }
        if settings.db() != 0 {
            setup.cmd("SELECT").arg(settings.db());
        }
        setup.cmd("CLIENT").arg("SETNAME").arg(client_name);
        socket.exec(&setup)?;
        socket.stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        Ok(socket)
    }

    /// Sends `pipe` and reads every reply; the first error reply is the result (after all of
    /// them are read, so the connection stays in step).
    pub fn exec(&mut self, pipe: &Pipeline) -> RedisResult<()> {
        self.query(pipe).map(drop)
    }

    /// Sends `pipe` and returns its replies, in order; the first error reply is the result
    /// instead (after all of them are read, so the connection stays in step).
    pub fn query(&mut self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        let replies = self.replies(pipe)?;
        let refused = replies.iter().find_map(|reply| match reply {
            Value::ServerError(e) => Some(RedisError::from(e.clone())),
            _ => None,
        });
        refused.map_or(Ok(replies), Err)
    }

    /// Sends `pipe` and returns its replies in order, a refused command's error reply in its
    /// place (`Value::ServerError`).
    pub fn replies(&mut self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        self.read_unread()?;
        self.stream.write_all(&pipe.get_packed_pipeline())?;
        (0..pipe.len()).map(|_| self.read_reply()).collect()
    }

    /// Writes `pipe` without waiting for its replies: they are read (and dropped) before the
    /// next call's, or by `close`. Once this returns the commands are in the kernel's hands.
    pub fn send_unread(&mut self, pipe: &Pipeline) -> RedisResult<()> {
        self.stream.write_all(&pipe.get_packed_pipeline())?;
        self.unread += pipe.len();
        Ok(())
    }

    /// Reads the replies still owed, then closes the socket: closing with replies unread would
    /// make the kernel reset the connection, which can discard commands Redis has not read yet.
    pub fn close(mut self) {
        if self.unread > 0 && self.stream.set_read_timeout(Some(CLOSE_WAIT)).is_ok() {
            let _ = self.read_unread();
        }
    }

    fn read_unread(&mut self) -> RedisResult<()> {
        while self.unread > 0 {
            self.read_reply()?; // an error reply to a fire-and-forget command changes nothing
            self.unread -= 1;
        }
        Ok(())
    }

    fn read_reply(&mut self) -> RedisResult<Value> {
        self.parser.parse_value(Spin {
            stream: &self.stream,
        })
    }
}

/// A read that polls the socket for up to [`SPIN`] before it blocks.
struct Spin<'a> {
    stream: &'a TcpStream,
}

impl Spin<'_> {
    /// A blocking read, begun again when a signal interrupts it: a handler that ran (Python's
    /// interrupt system calls) or a stop and resume (ptrace, SIGSTOP) says nothing of Redis, and
    /// the reply is still on its way.
    fn wait(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&mut &*self.stream).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl Read for Spin<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.stream.as_raw_fd();
        let start = Instant::now();
        loop {
            // SAFETY: `buf` is valid for `buf.len()` writable bytes and `fd` is this stream's
            // open socket for the whole call.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                _ => return Err(err),
            }
            if start.elapsed() >= SPIN {
                return self.wait(buf);
            }
            // Gives the core to anything runnable (Redis itself on a busy host); returns at
            // once on an idle one.
            // SAFETY: no arguments, no memory touched.
            unsafe { libc::sched_yield() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::signal_test::interrupt_me_after;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn a_signal_does_not_fail_a_read_waiting_for_its_reply() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            assert!(conn.read(&mut buf).unwrap() > 0); // CLIENT SETNAME
            conn.write_all(b"+OK\r\n").unwrap();
            assert!(conn.read(&mut buf).unwrap() > 0); // PING
            thread::sleep(Duration::from_millis(300));
            conn.write_all(b"+PONG\r\n").unwrap();
        });
        let info: ::redis::ConnectionInfo = format!("redis://127.0.0.1:{port}/0").parse().unwrap();
        let mut socket = SpinSocket::open(
            ("127.0.0.1", port),
            info.redis_settings(),
            "test",
            Duration::from_secs(5),
        )
        .unwrap();
        let mut ping = ::redis::pipe();
        ping.cmd("PING");
        // Past the spin: the read sleeps in recv when the signal comes.
        let signal = interrupt_me_after(Duration::from_millis(100));
        let result = socket.exec(&ping);
        signal.join().unwrap();
        server.join().unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}
