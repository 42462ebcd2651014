//! `tcp-send` and `tcp-recv`: one TCP connection carrying a verifiable byte stream.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::pattern::StreamPattern;
use crate::{parse_secs, print_json};

/// Bytes handed to one `write` / read by one `read`.
const CHUNK: usize = 256 * 1024;
/// How often blocked I/O wakes to check the deadline.
const POLL: Duration = Duration::from_millis(100);
/// Pause between non-blocking `accept` attempts while waiting for the sender.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

fn is_retry(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Receiver address, e.g. 198.18.0.2:9001 or [2001:2::2]:9001.
    #[arg(long)]
    dst: SocketAddr,
    /// Bytes of the stream pattern to send.
    #[arg(long)]
    bytes: u64,
    /// Local port to connect from (default: an ephemeral port), so the 5-tuple is known
    /// before the connection starts.
    #[arg(long)]
    sport: Option<u16>,
    /// Keep the connection open this long after the last byte before closing the send side
    /// (a test watches the established state meanwhile).
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Give up after this many seconds (connecting, sending and waiting for the receiver to
    /// close all count).
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    timeout_secs: Duration,
}

#[derive(Debug, Serialize)]
struct SendReport {
    /// Bytes written to the socket.
    sent_bytes: u64,
    /// All bytes were written and the receiver then closed the connection (so it read them).
    complete: bool,
    elapsed_secs: f64,
}

pub(crate) fn send(args: &SendArgs) -> Result<()> {
    let start = Instant::now();
    let deadline = start + args.timeout_secs;
    let mut stream = match args.sport {
        None => TcpStream::connect_timeout(&args.dst, args.timeout_secs),
        Some(port) => connect_from(args.dst, port),
    }
    .with_context(|| format!("connecting to {}", args.dst))?;
    stream.set_write_timeout(Some(POLL))?;
    stream.set_read_timeout(Some(POLL))?;

    let pattern = StreamPattern::new(CHUNK);
    let mut sent = 0u64;
    let mut complete = false;
    'run: {
        while sent < args.bytes {
            if Instant::now() >= deadline {
                break 'run;
            }
            let want = usize::try_from(args.bytes - sent).unwrap_or(usize::MAX);
            match stream.write(pattern.chunk(sent, want)) {
                Ok(0) => bail!("connection closed by the receiver after {sent} bytes"),
                Ok(n) => sent += n as u64,
                Err(e) if is_retry(&e) => {}
                Err(e) => return Err(e).with_context(|| format!("sending after {sent} bytes")),
            }
        }
        thread::sleep(Duration::from_millis(args.linger_ms));
        stream
            .shutdown(Shutdown::Write)
            .context("closing the send side")?;
        // The receiver closes once it has read everything: wait for that EOF.
        let mut scratch = [0u8; 4096];
        while Instant::now() < deadline {
            match stream.read(&mut scratch) {
                Ok(0) => {
                    complete = true;
                    break 'run;
                }
                Ok(_) => {}
                Err(e) if is_retry(&e) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break 'run,
                Err(e) => return Err(e).context("waiting for the receiver to close"),
            }
        }
    }
    print_json(&SendReport {
        sent_bytes: sent,
        complete,
        elapsed_secs: start.elapsed().as_secs_f64(),
    })
}

/// Connects to `dst` from local port `sport` (bound first, with SO_REUSEADDR so a port left
/// in TIME_WAIT by an earlier run can be bound again). Blocks as long as the kernel's SYN
/// retries.
fn connect_from(dst: SocketAddr, sport: u16) -> std::io::Result<TcpStream> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind, connect, setsockopt, socket,
        sockopt,
    };
    let (family, local): (_, SocketAddr) = if dst.is_ipv6() {
        (
            AddressFamily::Inet6,
            (std::net::Ipv6Addr::UNSPECIFIED, sport).into(),
        )
    } else {
        (
            AddressFamily::Inet,
            (std::net::Ipv4Addr::UNSPECIFIED, sport).into(),
        )
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
    connect(fd.as_raw_fd(), &SockaddrStorage::from(dst))?;
    Ok(TcpStream::from(fd))
}

#[derive(Debug, Args)]
pub(crate) struct RecvArgs {
    /// Address to listen on, e.g. 198.18.0.2:9001 or [2001:2::2]:9001.
    #[arg(long)]
    bind: SocketAddr,
    /// Stop after this many seconds (from the moment the socket listens).
    #[arg(long, value_parser = parse_secs)]
    timeout_secs: Duration,
    /// Also require exactly this many bytes for "ok".
    #[arg(long)]
    expect_bytes: Option<u64>,
    /// Wait this long after the sender's end of stream before closing (a half-closed
    /// connection a test can watch).
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
}

#[derive(Debug, Serialize)]
struct RecvReport {
    received_bytes: u64,
    /// Bytes that differ from the stream pattern.
    corrupt: u64,
    /// The sender closed the stream cleanly, no byte was corrupt, and the length matched
    /// --expect-bytes if given.
    ok: bool,
    /// A sender connected.
    connected: bool,
    /// The sender closed its side (end of stream reached).
    eof: bool,
    timed_out: bool,
    elapsed_secs: f64,
}

pub(crate) fn recv(args: &RecvArgs) -> Result<()> {
    let listener =
        TcpListener::bind(args.bind).with_context(|| format!("listening on {}", args.bind))?;
    listener.set_nonblocking(true)?;
    let start = Instant::now();
    let deadline = start + args.timeout_secs;
    eprintln!("ready");

    let mut report = RecvReport {
        received_bytes: 0,
        corrupt: 0,
        ok: false,
        connected: false,
        eof: false,
        timed_out: false,
        elapsed_secs: 0.0,
    };
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break Some(s),
            Err(e) if is_retry(&e) => {
                if Instant::now() >= deadline {
                    break None;
                }
                thread::sleep(ACCEPT_POLL);
            }
            Err(e) => return Err(e).context("accepting"),
        }
    };
    match stream {
        None => report.timed_out = true,
        Some(mut stream) => {
            report.connected = true;
            stream.set_nonblocking(false)?;
            stream.set_read_timeout(Some(POLL))?;
            let pattern = StreamPattern::new(CHUNK);
            let mut buf = vec![0u8; CHUNK];
            loop {
                if Instant::now() >= deadline {
                    report.timed_out = true;
                    break;
                }
                match stream.read(&mut buf) {
                    Ok(0) => {
                        report.eof = true;
                        thread::sleep(Duration::from_millis(args.linger_ms));
                        break;
                    }
                    Ok(n) => {
                        report.corrupt += pattern.mismatches(&buf[..n], report.received_bytes);
                        report.received_bytes += n as u64;
                    }
                    Err(e) if is_retry(&e) => {}
                    Err(e) => return Err(e).context("receiving"),
                }
            }
            // Dropping the stream closes it: the sender waits for that.
        }
    }
    report.ok = report.eof
        && report.corrupt == 0
        && args
            .expect_bytes
            .is_none_or(|want| want == report.received_bytes);
    report.elapsed_secs = start.elapsed().as_secs_f64();
    print_json(&report)
}
