//! `udp-send` and `udp-recv`: numbered, verifiable UDP datagrams over kernel sockets.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::pattern::{SEQ_LEN, check_datagram, fill_datagram};
use crate::seq::{MAX_EXPECT, SeqTracker};
use crate::{parse_secs, print_json};

/// Largest UDP payload in one unfragmented IPv4 packet on a 1500-byte MTU.
const MAX_PAYLOAD_V4: usize = 1500 - 20 - 8;
/// Largest UDP payload in one unfragmented IPv6 packet on a 1500-byte MTU.
const MAX_PAYLOAD_V6: usize = 1500 - 40 - 8;

/// When paced, the sender sleeps only if it is at least this far ahead of schedule; below
/// that it sends at once (a burst of a few datagrams), so it never spins.
const MIN_SLEEP: Duration = Duration::from_micros(50);
/// When paced and this far behind schedule (a stall), the schedule restarts from now rather
/// than catching up in one long burst.
const MAX_LAG: Duration = Duration::from_millis(5);

/// How often a blocked receive wakes to check its deadline.
const RECV_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// Destination address, e.g. 198.18.0.2:9000 or [2001:2::2]:9000.
    #[arg(long)]
    dst: SocketAddr,
    /// UDP payload bytes per datagram (8..=1472 for IPv4, 8..=1452 for IPv6).
    #[arg(long)]
    size: usize,
    /// Number of datagrams to send (sequence numbers 0..count).
    #[arg(long)]
    count: u64,
    /// Pace to this many datagrams per second (default: as fast as possible).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Stop after this many seconds even if not all datagrams were sent.
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    duration_secs: Duration,
    /// Local port to send from (default: an ephemeral port), so the 5-tuple is known.
    #[arg(long, default_value_t = 0)]
    sport: u16,
}

#[derive(Debug, Serialize)]
struct SendReport {
    /// Datagrams the kernel accepted.
    sent: u64,
    /// Payload bytes of those datagrams.
    bytes: u64,
    /// Sends refused with a transient error (ICMP unreachable reported back, no buffer space).
    errors: u64,
    /// The duration limit ended the run before `count` datagrams were tried.
    timed_out: bool,
    elapsed_secs: f64,
}

pub(crate) fn send(args: &SendArgs) -> Result<()> {
    let max = if args.dst.is_ipv4() {
        MAX_PAYLOAD_V4
    } else {
        MAX_PAYLOAD_V6
    };
    if !(SEQ_LEN..=max).contains(&args.size) {
        bail!(
            "--size {} out of range: must be {SEQ_LEN}..={max} for {}",
            args.size,
            if args.dst.is_ipv4() { "IPv4" } else { "IPv6" }
        );
    }
    let local: SocketAddr = if args.dst.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, args.sport).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, args.sport).into()
    };
    let sock = UdpSocket::bind(local).context("binding the sending socket")?;
    sock.connect(args.dst)
        .with_context(|| format!("connecting to {}", args.dst))?;

    let start = Instant::now();
    let deadline = start + args.duration_secs;
    let mut buf = vec![0u8; args.size];
    let mut report = SendReport {
        sent: 0,
        bytes: 0,
        errors: 0,
        timed_out: false,
        elapsed_secs: 0.0,
    };
    // Pacing schedule: datagram `seq` is due at base + (seq - base_seq) / rate.
    let mut base = start;
    let mut base_seq = 0u64;

    for seq in 0..args.count {
        let mut now = Instant::now();
        if now >= deadline {
            report.timed_out = true;
            break;
        }
        if let Some(rate) = args.rate {
            let due = base + Duration::from_secs_f64((seq - base_seq) as f64 / rate as f64);
            if due > now {
                let ahead = due - now;
                if ahead >= MIN_SLEEP {
                    thread::sleep(ahead.min(deadline - now));
                    now = Instant::now();
                    if now >= deadline {
                        report.timed_out = true;
                        break;
                    }
                }
            } else if now - due > MAX_LAG {
                base = now;
                base_seq = seq;
            }
        }
        fill_datagram(&mut buf, seq);
        match sock.send(&buf) {
            Ok(n) => {
                report.sent += 1;
                report.bytes += n as u64;
            }
            Err(e) if is_transient_send_error(&e) => report.errors += 1,
            Err(e) => return Err(e).with_context(|| format!("sending datagram {seq}")),
        }
    }
    report.elapsed_secs = start.elapsed().as_secs_f64();
    print_json(&report)
}

fn is_transient_send_error(e: &std::io::Error) -> bool {
    const ENOBUFS: i32 = 105;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::WouldBlock
            | ErrorKind::Interrupted
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
    ) || e.raw_os_error() == Some(ENOBUFS)
}

#[derive(Debug, Args)]
pub(crate) struct RecvArgs {
    /// Address to bind, e.g. 198.18.0.2:9000 or [2001:2::2]:9000.
    #[arg(long)]
    bind: SocketAddr,
    /// Datagrams expected (sequence numbers 0..expect); stops early once all have arrived.
    /// 0 means: just count until the timeout.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_EXPECT))]
    expect: u64,
    /// Stop after this many seconds (from the moment the socket is bound).
    #[arg(long, value_parser = parse_secs)]
    timeout_secs: Duration,
    /// Receive buffer to ask for (SO_RCVBUFFORCE as root, else SO_RCVBUF capped by
    /// net.core.rmem_max). The default 208 KiB holds only ~200 small datagrams, so a receiver
    /// that shares its core with the sender overflows now and then.
    #[arg(long, default_value_t = 8 << 20)]
    rcvbuf: usize,
}

#[derive(Debug, Serialize)]
struct RecvReport {
    /// Datagrams received, whatever they held.
    received: u64,
    /// Payload bytes of those datagrams.
    bytes: u64,
    /// Datagrams whose payload did not match the pattern (or was shorter than 8 bytes).
    corrupt: u64,
    /// Extra copies of a sequence number already received.
    duplicates: u64,
    /// First arrivals of a sequence number lower than one already received.
    out_of_order: u64,
    /// Sequence numbers of 0..expect never received.
    missing: u64,
    /// Valid datagrams whose sequence number is >= expect.
    out_of_range: u64,
    /// The timeout ended the run (rather than every expected datagram having arrived).
    timed_out: bool,
    elapsed_secs: f64,
    /// The socket's receive buffer as the kernel set it (`SO_RCVBUF`, bytes).
    rcvbuf_bytes: usize,
    /// UDP datagrams the kernel of this network namespace dropped while the receiver ran
    /// (`InErrors` of Udp and Udp6 in /proc/net/snmp{,6}: receive-buffer overflows, bad
    /// checksums), so that `received + kernel_drops` accounts for every datagram that reached
    /// this host's UDP layer. The namespace's own: a test's namespace holds only its receiver.
    kernel_drops: u64,
    /// Of those, receive-buffer overflows (`RcvbufErrors`).
    kernel_rcvbuf_errors: u64,
}

/// UDP error counters of the calling process's network namespace.
#[derive(Debug, Clone, Copy, Default)]
struct UdpErrors {
    in_errors: u64,
    rcvbuf_errors: u64,
}

impl UdpErrors {
    fn read() -> Self {
        let mut e = Self::default();
        // /proc/net/snmp: a "Udp:" header line with the names, then a "Udp:" line with values.
        if let Ok(text) = std::fs::read_to_string("/proc/net/snmp") {
            let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
            if let [names, values] = udp[..] {
                for (k, v) in names
                    .split_whitespace()
                    .zip(values.split_whitespace())
                    .skip(1)
                {
                    e.add(k, v);
                }
            }
        }
        // /proc/net/snmp6: one "Udp6InErrors  N" per line.
        if let Ok(text) = std::fs::read_to_string("/proc/net/snmp6") {
            for l in text.lines() {
                let mut w = l.split_whitespace();
                if let (Some(k), Some(v)) = (w.next(), w.next())
                    && let Some(k) = k.strip_prefix("Udp6")
                {
                    e.add(k, v);
                }
            }
        }
        e
    }

    fn add(&mut self, name: &str, value: &str) {
        let v: u64 = value.parse().unwrap_or(0);
        match name {
            "InErrors" => self.in_errors += v,
            "RcvbufErrors" => self.rcvbuf_errors += v,
            _ => {}
        }
    }
}

/// Raises the socket's receive buffer to `want` bytes: SO_RCVBUFFORCE needs CAP_NET_ADMIN,
/// SO_RCVBUF is capped by net.core.rmem_max. Returns what the kernel set.
fn raise_rcvbuf(sock: &UdpSocket, want: usize) -> usize {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &want).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &want);
    }
    getsockopt(sock, sockopt::RcvBuf).unwrap_or(0)
}

pub(crate) fn recv(args: &RecvArgs) -> Result<()> {
    let sock = UdpSocket::bind(args.bind).with_context(|| format!("binding {}", args.bind))?;
    sock.set_read_timeout(Some(RECV_POLL))?;
    let rcvbuf_bytes = raise_rcvbuf(&sock, args.rcvbuf);
    let errors_before = UdpErrors::read();
    let start = Instant::now();
    let deadline = start + args.timeout_secs;
    eprintln!("ready");

    let mut tracker = SeqTracker::new(args.expect);
    let mut buf = vec![0u8; 65536];
    let (mut received, mut bytes, mut corrupt) = (0u64, 0u64, 0u64);
    let mut timed_out = false;
    while !tracker.complete() {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                received += 1;
                bytes += n as u64;
                match check_datagram(&buf[..n]) {
                    Some(seq) => {
                        tracker.record(seq);
                    }
                    None => corrupt += 1,
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e).context("receiving"),
        }
    }
    let s = tracker.summary();
    let errors_after = UdpErrors::read();
    print_json(&RecvReport {
        received,
        bytes,
        corrupt,
        duplicates: s.duplicates,
        out_of_order: s.out_of_order,
        missing: s.missing,
        out_of_range: s.out_of_range,
        timed_out,
        elapsed_secs: start.elapsed().as_secs_f64(),
        rcvbuf_bytes,
        kernel_drops: errors_after.in_errors - errors_before.in_errors,
        kernel_rcvbuf_errors: errors_after.rcvbuf_errors - errors_before.rcvbuf_errors,
    })
}
