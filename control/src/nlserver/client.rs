//! A blocking client of the netlink-format control socket: one connection, requests answered
//! in order. The CLI and the tests talk to the daemon through it.

use std::{
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use isopath_proto::{
    attr::Ctx,
    error::DecodeError,
    frame::{Datagram, MAX_DATAGRAM},
    msg::{ExtAckAttrs, Message, Request},
    nl::{Encoder, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, messages},
};
use rustix::net::SocketFlags;

use super::sock;

/// How long a request waits for its answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// The socket cannot be reached.
    #[error("connecting to {} (is isopathd running?): {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Sending or receiving failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No answer in time.
    #[error("no answer from isopathd within {0:?}")]
    Timeout(Duration),
    /// The daemon closed the connection.
    #[error("isopathd closed the connection")]
    Closed,
    /// An answer could not be decoded.
    #[error("malformed answer: {0}")]
    Decode(#[from] DecodeError),
    /// The request does not fit in a datagram.
    #[error("the request is larger than a datagram")]
    TooLarge,
    /// The daemon refused or failed the request.
    #[error("{}", refused_text(*errno, ext))]
    Refused {
        /// Positive errno.
        errno: i32,
        /// Its extended ack.
        ext: ExtAckAttrs,
    },
}

fn refused_text(errno: i32, ext: &ExtAckAttrs) -> String {
    let os = io::Error::from_raw_os_error(errno);
    let os = os.to_string();
    let os = os.split(" (os error").next().unwrap_or(&os).to_owned();
    match &ext.msg {
        Some(m) => format!("{os}: {m}"),
        None => os,
    }
}

impl NlError {
    /// The errno of a refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A connection to the daemon.
#[derive(Debug)]
pub struct NlClient {
    fd: OwnedFd,
    seq: u32,
    pid: u32,
    timeout: Duration,
    buf: Datagram,
}

impl NlClient {
    /// Connects to the daemon's netlink-format socket at `path`.
    ///
    /// # Errors
    /// [`NlError::Connect`].
    pub fn connect(path: &Path) -> Result<Self, NlError> {
        let fd =
            sock::connect_to(path, SocketFlags::empty()).map_err(|source| NlError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            fd,
            seq: 0,
            pid: std::process::id(),
            timeout: DEFAULT_TIMEOUT,
            buf: Datagram::with_capacity(MAX_DATAGRAM),
        })
    }

    /// Waits `timeout` for each answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `request` (with `NLM_F_ACK`, or `NLM_F_DUMP` when `dump`) and returns what
    /// answered it: the records, without the ack or the `NLMSG_DONE`.
    ///
    /// # Errors
    /// [`NlError::Refused`] for an error reply or a dump that ended with an error; I/O,
    /// timeouts, malformed answers.
    pub fn request(&mut self, request: &Request, dump: bool) -> Result<Vec<Message>, NlError> {
        self.request_flags(request, if dump { NLM_F_DUMP } else { NLM_F_ACK })
    }

    /// Same, with these header flags (besides `NLM_F_REQUEST`).
    ///
    /// # Errors
    /// As [`NlClient::request`].
    pub fn request_flags(
        &mut self,
        request: &Request,
        flags: u16,
    ) -> Result<Vec<Message>, NlError> {
        let mut out = Vec::new();
        self.request_each(request, flags, |m| out.push(m))?;
        Ok(out)
    }

    /// Sends `request` with these header flags and hands each record that answers it to
    /// `each` as it arrives (a dump of a million flows is never held whole). Returns whether
    /// the dump was marked `NLM_F_DUMP_INTR` (something changed while it ran).
    ///
    /// # Errors
    /// As [`NlClient::request`].
    pub fn request_each(
        &mut self,
        request: &Request,
        flags: u16,
        mut each: impl FnMut(Message),
    ) -> Result<bool, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let (seq, pid) = (self.seq, self.pid);
        self.buf.clear();
        self.buf
            .push(|e| request.encode(e, flags, seq, pid))
            .map_err(|_| NlError::TooLarge)?;
        sock::send_wait(&self.fd, self.buf.bytes())?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut intr = false;
        loop {
            self.recv_datagram()?;
            for m in messages(self.buf.bytes()) {
                let m = m?;
                if m.header.seq != seq {
                    continue;
                }
                intr |= m.header.flags & NLM_F_DUMP_INTR != 0;
                match Message::decode(&m, Ctx { strict: false })? {
                    Message::Error(e) if e.is_ack() && !dump => return Ok(intr),
                    Message::Error(e) => {
                        return Err(NlError::Refused {
                            errno: e.errno(),
                            ext: e.ext,
                        });
                    }
                    Message::Done(d) if d.status < 0 => {
                        return Err(NlError::Refused {
                            errno: -d.status,
                            ext: d.ext,
                        });
                    }
                    Message::Done(_) => return Ok(intr),
                    m => each(m),
                }
            }
        }
    }

    /// Sends raw bytes as one datagram (tests send malformed ones).
    ///
    /// # Errors
    /// The send failed.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), NlError> {
        sock::send_wait(&self.fd, bytes)?;
        Ok(())
    }

    /// Receives one datagram and decodes its messages, each with its sequence number.
    ///
    /// # Errors
    /// Timeout, I/O, a closed connection, a malformed message.
    pub fn recv(&mut self) -> Result<Vec<(u32, Message)>, NlError> {
        self.recv_datagram()?;
        self.decoded()
    }

    /// Receives one datagram into the buffer.
    fn recv_datagram(&mut self) -> Result<(), NlError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NlError::Timeout(self.timeout));
            }
            if !sock::wait_readable(self.fd.as_fd(), left.as_millis().max(1) as i32)? {
                continue;
            }
            let n = match sock::recv_one(&self.fd, self.buf.recv_buf())? {
                sock::Recv::Datagram(n) => n,
                sock::Recv::Empty => continue,
                sock::Recv::Closed => return Err(NlError::Closed),
            };
            self.buf.received(n);
            return Ok(());
        }
    }

    /// Receives what has arrived without waiting (nothing: an empty list).
    ///
    /// # Errors
    /// I/O, a closed connection, a malformed message.
    pub fn recv_nowait(&mut self) -> Result<Vec<(u32, Message)>, NlError> {
        let n = match sock::recv_one(&self.fd, self.buf.recv_buf())? {
            sock::Recv::Datagram(n) => n,
            sock::Recv::Empty => return Ok(Vec::new()),
            sock::Recv::Closed => return Err(NlError::Closed),
        };
        self.buf.received(n);
        self.decoded()
    }

    /// The messages of the datagram just received, each with its sequence number.
    fn decoded(&self) -> Result<Vec<(u32, Message)>, NlError> {
        messages(self.buf.bytes())
            .map(|m| {
                let m = m?;
                Ok((m.header.seq, Message::decode(&m, Ctx { strict: false })?))
            })
            .collect()
    }

    /// Encodes a request into a fresh buffer (tests build on it).
    pub fn encode(request: &Request, flags: u16, seq: u32) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut e = Encoder::new(&mut buf);
        let n = match request.encode(&mut e, flags, seq, 0) {
            Ok(()) => e.len(),
            Err(_) => 0,
        };
        buf.truncate(n);
        buf
    }
}
