//! The service manager's readiness protocol (`sd_notify`), without libsystemd.
//!
//! With `Type=notify`, systemd passes the path of a datagram socket in `$NOTIFY_SOCKET` and
//! waits for `READY=1` before it considers the unit started (and starts the units ordered after
//! it). The message is newline-separated `KEY=value` assignments in one datagram, sent from the
//! main process (`NotifyAccess=main`): see sd_notify(3) and systemd's
//! `src/libsystemd/sd-daemon/sd-daemon.c`. A path starting with `@` names a socket in the
//! abstract namespace. Without `$NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::{
    io,
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixDatagram},
    },
};

/// The environment variable naming the service manager's socket.
pub const ENV: &str = "NOTIFY_SOCKET";

/// Sends `state` (for example `"READY=1\nSTATUS=forwarding"`) to `$NOTIFY_SOCKET`.
/// Returns whether a message was sent (false when the variable is unset or empty).
///
/// # Errors
/// The socket cannot be created or the datagram not sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(ENV) {
        Some(path) if !path.is_empty() => {
            send_to(&path.to_string_lossy(), state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket at `path` (`@name` for an abstract socket).
///
/// # Errors
/// The socket cannot be created or the datagram not sent.
pub fn send_to(path: &str, state: &str) -> io::Result<()> {
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None if path.starts_with('/') => SocketAddr::from_pathname(path)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ENV}={path:?}: neither an absolute path nor an abstract name (@...)"),
            ));
        }
    };
    let sock = UnixDatagram::unbound()?;
    let n = sock.send_to_addr(state.as_bytes(), &addr)?;
    if n != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("{ENV}: sent {n} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_reaches_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("isopath-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1\nSTATUS=test").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=test");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn datagram_reaches_an_abstract_socket() {
        let name = format!("isopath-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        send_to(&format!("@{name}"), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_relative_path_is_refused() {
        let e = send_to("notify.sock", "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
