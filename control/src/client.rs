//! The CLI's side of the control socket.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::Value;

/// Sends `request` and returns the daemon's JSON reply.
///
/// # Errors
/// The socket cannot be reached, or the reply is not JSON, or it carries an `error`.
pub fn request(socket: &Path, request: &str) -> anyhow::Result<Value> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {} (is isopathd running?)", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(request.as_bytes())?;
    s.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .context("reading the reply")?;
    let v: Value = serde_json::from_str(&line).context("the reply is not JSON")?;
    if let Some(e) = v.get("error") {
        bail!("isopathd: {e}");
    }
    Ok(v)
}
