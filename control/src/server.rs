//! The control socket's connections, served without blocking the control loop: each accepted
//! connection is non-blocking and kept with what it sent so far; every turn of the loop reads
//! what has arrived and hands back the connections whose request line is complete (or
//! unreadable, or late). A client that connects and sends nothing costs the loop one `read`
//! per turn until [`READ_TIMEOUT`], never a wait.

use std::{
    io::{self, Read},
    os::unix::net::{UnixListener, UnixStream},
    time::{Duration, Instant},
};

use tracing::warn;

use crate::request::MAX_LINE;

/// How long a connection may take to send its request line before it is answered with an
/// error (EAGAIN, as a blocking read with this timeout reported it).
pub const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// Connections read at once; more wait in the listen backlog until one is answered.
pub const MAX_PENDING: usize = 64;

/// A connection whose request line is not complete yet.
#[derive(Debug)]
struct Pending {
    stream: UnixStream,
    buf: Vec<u8>,
    eof: bool,
    since: Instant,
}

/// The listener and the connections being read.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    pending: Vec<Pending>,
    /// Connections accepted.
    pub accepted: u64,
}

impl Server {
    /// Serves `listener` (made non-blocking).
    ///
    /// # Errors
    /// The listener cannot be made non-blocking.
    pub fn new(listener: UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self {
            listener,
            pending: Vec::new(),
            accepted: 0,
        })
    }

    /// Connections being read now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Accepts the connections waiting, reads what every pending one sent, and returns those
    /// that are done: the stream (still non-blocking) and the request line or why there is
    /// none.
    pub fn poll(&mut self, now: Instant) -> Vec<(UnixStream, io::Result<String>)> {
        while self.pending.len() < MAX_PENDING {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.accepted += 1;
                    if let Err(e) = stream.set_nonblocking(true) {
                        warn!("control connection: {e}");
                        continue;
                    }
                    self.pending.push(Pending {
                        stream,
                        buf: Vec::new(),
                        eof: false,
                        since: now,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("control socket accept: {e}");
                    break;
                }
            }
        }
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            let result = match fill(p) {
                Err(e) => Some(Err(e)),
                Ok(()) => framed(&p.buf, p.eof, now.duration_since(p.since) >= READ_TIMEOUT),
            };
            match result {
                Some(r) => {
                    let p = self.pending.swap_remove(i);
                    done.push((p.stream, r));
                }
                None => i += 1,
            }
        }
        done
    }
}

/// Reads what `p`'s client has sent, up to [`MAX_LINE`] bytes in all.
fn fill(p: &mut Pending) -> io::Result<()> {
    let mut chunk = [0u8; 1024];
    while !p.eof && p.buf.len() < MAX_LINE && !p.buf.contains(&b'\n') {
        let room = (MAX_LINE - p.buf.len()).min(chunk.len());
        match p.stream.read(&mut chunk[..room]) {
            Ok(0) => p.eof = true,
            Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The request in `buf` so far: `None` while more may come; the line (up to and with its
/// newline, or all of it at end of stream); an error for a line over [`MAX_LINE`], one that is
/// not UTF-8, or a client that said nothing complete in time.
fn framed(buf: &[u8], eof: bool, late: bool) -> Option<io::Result<String>> {
    let line = match buf.iter().position(|&b| b == b'\n') {
        Some(end) => &buf[..=end],
        None if buf.len() >= MAX_LINE => {
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request over 4 KiB",
            )));
        }
        None if eof => buf,
        None if late => return Some(Err(io::Error::from_raw_os_error(libc::EAGAIN))),
        None => return None,
    };
    Some(
        String::from_utf8(line.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request is not UTF-8")),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn lines_are_framed_as_the_blocking_reader_framed_them() {
        assert_eq!(
            framed(b"status\n", false, false).unwrap().unwrap(),
            "status\n"
        );
        assert_eq!(framed(b"stat", false, false).map(|r| r.is_ok()), None);
        assert_eq!(framed(b"status", true, false).unwrap().unwrap(), "status");
        assert_eq!(framed(b"", true, false).unwrap().unwrap(), "");
        assert_eq!(framed(b"a\nb\n", false, false).unwrap().unwrap(), "a\n");
        let e = framed(b"\xff\xfe\n", false, false).unwrap().unwrap_err();
        assert_eq!(e.to_string(), "request is not UTF-8");
        let e = framed(&[b'a'; MAX_LINE], false, false)
            .unwrap()
            .unwrap_err();
        assert_eq!(e.to_string(), "request over 4 KiB");
        let mut exact = vec![b'a'; MAX_LINE - 1];
        exact.push(b'\n');
        assert!(framed(&exact, false, false).unwrap().is_ok());
        let e = framed(b"sta", false, true).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
    }

    #[test]
    fn a_silent_client_waits_without_holding_anyone_else() {
        let dir = std::env::temp_dir().join(format!("isopath-server-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let mut server = Server::new(UnixListener::bind(&path).unwrap()).unwrap();
        let t = Instant::now();
        let _silent = UnixStream::connect(&path).unwrap();
        let mut talker = UnixStream::connect(&path).unwrap();
        talker.write_all(b"status\n").unwrap();
        let before = Instant::now();
        let done = server.poll(t);
        // One turn, no wait: the talker is answered, the silent client is still pending.
        assert!(before.elapsed() < Duration::from_millis(50));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1.as_ref().unwrap(), "status\n");
        assert_eq!((server.pending(), server.accepted), (1, 2));
        assert!(server.poll(t + Duration::from_millis(199)).is_empty());
        let late = server.poll(t + READ_TIMEOUT);
        assert_eq!(late.len(), 1);
        assert_eq!(
            late[0].1.as_ref().unwrap_err().raw_os_error(),
            Some(libc::EAGAIN)
        );
        assert_eq!(server.pending(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
