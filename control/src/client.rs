//! A client of the control socket: one request per connection, one JSON line back. The CLI,
//! `isopath-bench` and the integration tests all talk to the daemon through it.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{request::Request, status::Status};

/// How long a client waits for the daemon's reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket cannot be reached.
    #[error("connecting to {} (is isopathd running?): {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Sending or receiving failed (a timeout included).
    #[error("{op}: {source}")]
    Io {
        /// `sending the request`, `reading the reply`.
        op: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The request has an empty argument or one with white space in it.
    #[error("{0:?}: every argument must be a single word")]
    NotSendable(String),
    /// The reply is not JSON, or not the reply this request expects.
    #[error("the reply is not what {request:?} answers ({source}): {reply:?}")]
    BadReply {
        /// The request.
        request: String,
        /// Why.
        source: serde_json::Error,
        /// The reply as read.
        reply: String,
    },
    /// The daemon refused or failed the request.
    #[error("isopathd: {0}")]
    Daemon(String),
}

/// A control socket to talk to.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the daemon at `socket`, waiting [`DEFAULT_TIMEOUT`] for replies.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same, waiting `timeout` for each reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request` and reads its reply into `T`; an error reply is [`ClientError::Daemon`].
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T, ClientError> {
        if !request.is_sendable() {
            return Err(ClientError::NotSendable(request.to_string()));
        }
        let line = request.to_string();
        let v = self.line(&line)?;
        if let Some(e) = v.get("error") {
            return Err(ClientError::Daemon(
                e.as_str().map_or_else(|| e.to_string(), str::to_owned),
            ));
        }
        T::deserialize(&v).map_err(|source| ClientError::BadReply {
            request: line,
            source,
            reply: v.to_string(),
        })
    }

    /// The daemon's [`Status`].
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn status(&self) -> Result<Status, ClientError> {
        self.call(&Request::Status)
    }

    /// Sends one request line as written (it need not be a valid request) and returns the
    /// reply's JSON, an error reply included: for tools that look at replies as documents.
    ///
    /// # Errors
    /// Transport errors, or a reply that is not JSON.
    pub fn line(&self, line: &str) -> Result<Value, ClientError> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        let mut s = self.connect()?;
        s.write_all(&bytes).map_err(|source| ClientError::Io {
            op: "sending the request",
            source,
        })?;
        let mut reply = String::new();
        BufReader::new(&s)
            .read_line(&mut reply)
            .map_err(|source| ClientError::Io {
                op: "reading the reply",
                source,
            })?;
        serde_json::from_str(&reply).map_err(|source| ClientError::BadReply {
            request: line.to_owned(),
            source,
            reply,
        })
    }

    /// Sends `bytes` exactly as given (no newline added), closes the sending side and returns
    /// everything the daemon wrote back: for tests of malformed requests.
    ///
    /// # Errors
    /// Connecting.
    pub fn raw(&self, bytes: &[u8]) -> Result<String, ClientError> {
        let mut s = self.connect()?;
        // The daemon may answer and close before reading everything (a request over the
        // limit): what it wrote back still counts.
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // A reset after the reply (the daemon closed with the request unread) ends the read;
        // the bytes before it are kept.
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        let s = UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
            path: self.socket.clone(),
            source,
        })?;
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .map_err(|source| ClientError::Io {
                op: "setting the socket's timeouts",
                source,
            })?;
        Ok(s)
    }
}
