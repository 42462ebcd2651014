//! The netlink-format control socket (`isopath-proto` over `SOCK_SEQPACKET`), served by the
//! control loop without blocking it.
//!
//! Every turn the loop calls [`NlServer::poll`]: it accepts waiting connections (past
//! `max_clients` a newcomer gets one `EUSERS` error and is closed), sends what connections
//! still owe (queued datagrams, the next part of a dump, as the kernel's `netlink_dump` does
//! when the reader drains its socket), then reads one datagram from each connection that has
//! nothing pending. Each message of a datagram is decoded with the connection's options:
//! malformed ones get their error reply with the extended ack (text, offset, missing
//! attribute) and the connection stays usable; messages that ask nothing are acked if asked;
//! connection options (`GETCONN`, `SETCONN`) and permissions are answered here. The requests
//! left go back to the loop as [`Job`]s, and the loop answers each with
//! [`NlServer::answer`].
//!
//! Backpressure: a connection is read only when everything it was answered has been sent, so
//! what one client owes is bounded by one datagram's worth of requests, and a client that
//! never reads costs the loop nothing but its queued replies.
//!
//! Permissions (as netlink's and conntrack's): gets and dumps of links, bonds, workers,
//! captures and the status are open to any client that can connect (the socket file's mode
//! and group decide who can); flow dumps, the `flows` group and every change need the peer
//! to be root or a member of the admin group, read with `SO_PEERCRED` and `SO_PEERGROUPS` at
//! accept. A refusal is `EPERM` with a text naming what is missing.

pub mod cli;
pub mod client;
mod sock;
#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    fmt, io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use isopath_proto::{
    attr::Ctx,
    dump::{Dump, Dumper, Part, Step},
    frame::{DEFAULT_DUMP_BUF, Datagram, MAX_DATAGRAM, MIN_DUMP_BUF},
    msg::{
        ConnMsg, ConnSet, ExtAck, Group, Incoming, Message, Request, put_ack, put_error,
        put_overrun,
    },
    nl::{Header, NLM_F_ACK, align, messages},
};
use tracing::warn;

pub use sock::{Creds, group_gid};

/// How many datagrams one connection may owe before a dump stops producing parts for it.
const MAX_OWED: usize = 64;

/// How many datagrams a subscriber may owe before its events are dropped (counted, and told
/// with an `ENOBUFS` error once it drains, as a netlink socket whose receive buffer overran).
pub const MAX_EVENTS_OWED: usize = 32;

/// The same for a connection of root or the admin group (the only ones that may join the
/// `flows` group, whose bursts are thousands of events: a flush, a scan): 128 datagrams of
/// packed events, about 10,000 flow events, 2 MiB at most, as `conntrack -E` runs with a
/// large receive buffer.
pub const MAX_EVENTS_OWED_ADMIN: usize = 128;

/// The most bytes of events packed into one datagram.
const EVENT_DATAGRAM: usize = 16 * 1024;

/// What the server is configured with.
#[derive(Debug, Clone)]
pub struct NlConfig {
    /// The socket file.
    pub path: PathBuf,
    /// Its mode (e.g. `0o660`).
    pub mode: u32,
    /// Its group, if any.
    pub group: Option<(String, u32)>,
    /// The group whose members may change things (root always may).
    pub admin_group: Option<(String, u32)>,
    /// Most connections at once.
    pub max_clients: usize,
}

/// A connection's identity (never reused in one run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

/// A request for the control loop.
#[derive(Debug)]
pub struct Job {
    /// Whose.
    pub conn: ConnId,
    /// Its header (`seq`, `pid`, flags).
    pub header: Header,
    /// A dump request (`NLM_F_DUMP` on a `GET`).
    pub dump: bool,
    /// What it asks.
    pub request: Request,
}

/// How the loop answers a [`Job`].
pub enum Answer {
    /// Messages (a `GET`'s reply), then the ack if it was asked for.
    Records(Vec<Message>),
    /// Done: just the ack if it was asked for.
    Done,
    /// Refused or failed: an error reply with this positive errno and text.
    Error(i32, String),
    /// A dump, sent part by part as the client reads.
    Dump(Box<dyn Dump>),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Records(r) => f.debug_tuple("Records").field(r).finish(),
            Self::Done => f.write_str("Done"),
            Self::Error(e, m) => f.debug_tuple("Error").field(e).field(m).finish(),
            Self::Dump(_) => f.write_str("Dump"),
        }
    }
}

/// The server's counters (shown in the status).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NlCounters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused past `max_clients`.
    pub refused_max_clients: u64,
    /// Messages received.
    pub messages: u64,
    /// Malformed messages (answered with an error).
    pub malformed: u64,
    /// Requests refused for want of permission.
    pub refused_perm: u64,
    /// Error replies sent, all causes.
    pub errors: u64,
    /// Dumps started.
    pub dumps: u64,
    /// Connections closed on an I/O error.
    pub io_errors: u64,
    /// Events sent to subscribers.
    pub events: u64,
    /// Events subscribers lost (they did not keep up).
    pub events_lost: u64,
}

/// `Dump` for a boxed dump (the driver is generic, connections hold any dump).
struct Boxed(Box<dyn Dump>);

impl Dump for Boxed {
    fn dump(&mut self, part: &mut Part<'_>) -> Step {
        self.0.dump(part)
    }
    fn generation(&self) -> Option<u64> {
        self.0.generation()
    }
    fn done(&mut self) {
        self.0.done();
    }
}

struct Conn {
    id: ConnId,
    fd: OwnedFd,
    creds: Creds,
    admin: bool,
    strict: bool,
    dump_buf: usize,
    groups: u32,
    /// Datagrams owed, oldest first.
    out: VecDeque<Vec<u8>>,
    dump: Option<Dumper<Boxed>>,
    /// Requests the loop holds (it answers them later: `port add`).
    held: usize,
    closed: bool,
    /// The last datagram of `out` holds events (more may be appended).
    tail_is_event: bool,
    /// Events lost since the last overrun notice.
    lost: u64,
    /// Events lost in all.
    lost_total: u64,
}

impl Conn {
    /// Queues a datagram (a reply or a dump part).
    fn push(&mut self, d: Vec<u8>) {
        self.out.push_back(d);
        self.tail_is_event = false;
    }

    /// Queues an event: appended to the last queued datagram if that holds events and has
    /// room (the peer's queue takes 10 datagrams, whatever their size: packing events is
    /// what lets a subscriber that reads keep up with a burst).
    fn push_event(&mut self, e: &[u8]) {
        if self.tail_is_event
            && let Some(last) = self.out.back_mut()
            && last.len() + e.len() <= EVENT_DATAGRAM
        {
            last.extend_from_slice(e);
            return;
        }
        self.out.push_back(e.to_vec());
        self.tail_is_event = true;
    }

    fn busy(&self) -> bool {
        !self.out.is_empty() || self.dump.is_some() || self.held > 0
    }
}

/// The listener and its connections.
pub struct NlServer {
    listener: OwnedFd,
    cfg: NlConfig,
    conns: Vec<Conn>,
    next_id: u64,
    rx: Box<[u8]>,
    /// Its counters.
    pub counters: NlCounters,
}

impl fmt::Debug for NlServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NlServer")
            .field("path", &self.cfg.path)
            .field("conns", &self.conns.len())
            .finish()
    }
}

impl NlServer {
    /// Binds the socket (a stale file is replaced, a live server refused) and sets its mode and
    /// group.
    ///
    /// # Errors
    /// Binding, `chmod` or `chown` failed.
    pub fn bind(cfg: NlConfig) -> io::Result<Self> {
        if let Some(dir) = cfg.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let listener = sock::listen_at(&cfg.path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.path, std::fs::Permissions::from_mode(cfg.mode))?;
        if let Some((_, gid)) = &cfg.group {
            std::os::unix::fs::chown(&cfg.path, None, Some(*gid))?;
        }
        Ok(Self {
            listener,
            cfg,
            conns: Vec::new(),
            next_id: 1,
            rx: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            counters: NlCounters::default(),
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    /// Connections open now.
    pub fn clients(&self) -> usize {
        self.conns.len()
    }

    /// One turn: accept, send what is owed, read and decode; returns the requests for the
    /// loop.
    pub fn poll(&mut self) -> Vec<Job> {
        self.accept();
        for c in &mut self.conns {
            flush(c, &mut self.counters);
        }
        let mut jobs = Vec::new();
        let idle: Vec<usize> = (0..self.conns.len())
            .filter(|&i| !self.conns[i].busy() && !self.conns[i].closed)
            .collect();
        if !idle.is_empty() {
            let fds: Vec<_> = idle.iter().map(|&i| self.conns[i].fd.as_fd()).collect();
            let ready = sock::ready(&fds).unwrap_or_else(|e| {
                warn!("control socket poll: {e}");
                vec![false; fds.len()]
            });
            for (&i, _) in idle.iter().zip(ready).filter(|(_, r)| *r) {
                self.read(i, &mut jobs);
            }
        }
        self.conns.retain(|c| !c.closed);
        jobs
    }

    fn accept(&mut self) {
        loop {
            let fd = match sock::accept(self.listener.as_fd()) {
                Ok(Some(fd)) => fd,
                Ok(None) => return,
                Err(e) => {
                    warn!("control socket accept: {e}");
                    return;
                }
            };
            if self.conns.len() >= self.cfg.max_clients {
                self.counters.refused_max_clients += 1;
                self.counters.errors += 1;
                let text = format!(
                    "too many clients: {} connected, max_clients = {}",
                    self.conns.len(),
                    self.cfg.max_clients
                );
                let mut d = Datagram::with_capacity(512);
                let _ = d
                    .push(|e| put_error(e, &Header::default(), libc::EUSERS, &ExtAck::text(&text)));
                let _ = sock::send_one(&fd, d.bytes());
                continue;
            }
            let creds = match sock::creds(fd.as_fd()) {
                Ok(c) => c,
                Err(e) => {
                    warn!("control connection credentials: {e}");
                    continue;
                }
            };
            self.counters.accepted += 1;
            let admin = is_admin(&creds, self.cfg.admin_group.as_ref().map(|g| g.1));
            self.conns.push(Conn {
                id: ConnId(self.next_id),
                fd,
                creds,
                admin,
                strict: false,
                dump_buf: DEFAULT_DUMP_BUF,
                groups: 0,
                out: VecDeque::new(),
                dump: None,
                held: 0,
                closed: false,
                tail_is_event: false,
                lost: 0,
                lost_total: 0,
            });
            self.next_id += 1;
        }
    }

    fn read(&mut self, i: usize, jobs: &mut Vec<Job>) {
        let c = &mut self.conns[i];
        let n = match sock::recv_one(&c.fd, &mut self.rx) {
            Ok(sock::Recv::Datagram(n)) => n,
            Ok(sock::Recv::Empty) => return,
            Ok(sock::Recv::Closed) => {
                c.closed = true;
                return;
            }
            Err(_) => {
                self.counters.io_errors += 1;
                c.closed = true;
                return;
            }
        };
        let mut reply = Datagram::with_capacity(MAX_DATAGRAM);
        let admin_name = self.cfg.admin_group.as_ref();
        let mut at = 0;
        for m in messages(&self.rx[..n]) {
            self.counters.messages += 1;
            let m = match m {
                Ok(m) => {
                    at += align(m.bytes.len());
                    m
                }
                Err(e) => {
                    // A framing error: nothing after it starts on a message boundary. The
                    // error echoes what there is of the offending header.
                    let h = Header::read_partial(self.rx.get(at..n).unwrap_or_default());
                    self.counters.malformed += 1;
                    queue_error(c, &mut reply, &h, e.errno(), &ExtAck::of(&e));
                    self.counters.errors += 1;
                    break;
                }
            };
            let inc = match Incoming::decode(&m, Ctx { strict: c.strict }) {
                Ok(inc) => inc,
                Err(e) => {
                    self.counters.malformed += 1;
                    self.counters.errors += 1;
                    queue_error(c, &mut reply, &m.header, e.errno(), &ExtAck::of(&e));
                    continue;
                }
            };
            let h = inc.header;
            let dump = inc.is_dump();
            let Some(request) = inc.request else {
                if h.flags & NLM_F_ACK != 0 {
                    queue(c, &mut reply, |e| put_ack(e, &h));
                }
                continue;
            };
            if let Some(why) = refusal(&request, c.admin, &c.creds, admin_name) {
                self.counters.refused_perm += 1;
                self.counters.errors += 1;
                queue_error(c, &mut reply, &h, libc::EPERM, &ExtAck::text(&why));
                continue;
            }
            match request {
                Request::GetConn(_) => {
                    let msg = Message::NewConn(conn_msg(c));
                    queue(c, &mut reply, |e| msg.encode(e, 0, h.seq, h.pid));
                    if h.flags & NLM_F_ACK != 0 {
                        queue(c, &mut reply, |e| put_ack(e, &h));
                    }
                }
                Request::SetConn(set) => match set_conn(c, &set) {
                    Ok(()) if h.flags & NLM_F_ACK != 0 => {
                        queue(c, &mut reply, |e| put_ack(e, &h));
                    }
                    Ok(()) => {}
                    Err(why) => {
                        self.counters.errors += 1;
                        queue_error(c, &mut reply, &h, libc::EINVAL, &ExtAck::text(&why));
                    }
                },
                request => {
                    // What is queued so far goes first: replies keep the requests' order.
                    if !reply.is_empty() {
                        c.push(reply.bytes().to_vec());
                        reply.clear();
                    }
                    c.held += 1;
                    jobs.push(Job {
                        conn: c.id,
                        header: h,
                        dump,
                        request,
                    });
                }
            }
        }
        if !reply.is_empty() {
            c.push(reply.bytes().to_vec());
        }
        flush(c, &mut self.counters);
    }

    /// Answers job `header` of connection `conn` (gone connections are skipped).
    pub fn answer(&mut self, conn: ConnId, header: &Header, answer: Answer) {
        let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) else {
            return;
        };
        c.held = c.held.saturating_sub(1);
        let ack = header.flags & NLM_F_ACK != 0;
        let mut d = Datagram::with_capacity(MAX_DATAGRAM);
        match answer {
            Answer::Records(msgs) => {
                for m in &msgs {
                    queue(c, &mut d, |e| m.encode(e, 0, header.seq, header.pid));
                }
                if ack {
                    queue(c, &mut d, |e| put_ack(e, header));
                }
            }
            Answer::Done => {
                if ack {
                    queue(c, &mut d, |e| put_ack(e, header));
                }
            }
            Answer::Error(errno, text) => {
                self.counters.errors += 1;
                queue_error(c, &mut d, header, errno, &ExtAck::text(&text));
            }
            Answer::Dump(dump) => {
                self.counters.dumps += 1;
                // Whatever was queued before goes first.
                if !d.is_empty() {
                    c.push(d.bytes().to_vec());
                    d.clear();
                }
                c.dump = Some(Dumper::new(Boxed(dump), header.seq, header.pid));
            }
        }
        if !d.is_empty() {
            c.push(d.bytes().to_vec());
        }
        flush(c, &mut self.counters);
    }

    /// Sends `event` to every connection that joined `group`. A subscriber that owes
    /// [`MAX_EVENTS_OWED`] datagrams ([`MAX_EVENTS_OWED_ADMIN`] for root and the admin group) loses it (counted); the first event it gets after draining
    /// is preceded by an `ENOBUFS` error saying how many it lost. Never waits.
    pub fn broadcast(&mut self, group: Group, event: &Message) {
        let mut one = Datagram::with_capacity(4096);
        if event.encode_into(&mut one).is_err() {
            warn!("an event larger than 4 KiB was dropped");
            return;
        }
        for c in self
            .conns
            .iter_mut()
            .filter(|c| c.groups & group.mask() != 0 && !c.closed)
        {
            let owed = if c.admin {
                MAX_EVENTS_OWED_ADMIN
            } else {
                MAX_EVENTS_OWED
            };
            if c.out.len() >= owed {
                c.lost += 1;
                c.lost_total += 1;
                self.counters.events_lost += 1;
                continue;
            }
            if c.lost > 0 {
                let lost = c.lost;
                let mut d = Datagram::with_capacity(512);
                if d.push(|e| put_overrun(e, lost)).is_ok() {
                    c.push(d.bytes().to_vec());
                    c.lost = 0;
                }
            }
            c.push_event(one.bytes());
            self.counters.events += 1;
            flush(c, &mut self.counters);
        }
    }

    /// Waits up to `timeout` for a connection to accept or a request to read, sending dump
    /// parts meanwhile as their readers drain (so a dump streams at the reader's pace, not
    /// one socket's worth per turn of the loop). Returns at once when something is to read.
    pub fn wait(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // The listener, then each connection: writable wanted while it owes a dump part
            // (or a reply), readable while it is idle.
            let mut who = Vec::with_capacity(self.conns.len() + 1);
            let mut fds = vec![(self.listener.as_fd(), false)];
            for (i, c) in self.conns.iter().enumerate().filter(|(_, c)| !c.closed) {
                if c.dump.is_some() || !c.out.is_empty() {
                    who.push((i, true));
                    fds.push((c.fd.as_fd(), true));
                } else if !c.busy() {
                    who.push((i, false));
                    fds.push((c.fd.as_fd(), false));
                }
            }
            let ms = left.as_millis().max(1) as i64;
            let ready = match sock::wait_any(&fds, ms) {
                Ok(r) => r,
                Err(e) => {
                    warn!("control socket poll: {e}");
                    return;
                }
            };
            let mut readable = ready[0];
            for (&(i, out), _) in who.iter().zip(&ready[1..]).filter(|(_, r)| **r) {
                if out {
                    flush(&mut self.conns[i], &mut self.counters);
                } else {
                    readable = true;
                }
            }
            if readable || !ready.iter().any(|&r| r) {
                return;
            }
        }
    }

    /// Whether any connection joined `group`.
    pub fn has_subscribers(&self, group: Group) -> bool {
        self.conns
            .iter()
            .any(|c| c.groups & group.mask() != 0 && !c.closed)
    }

    /// Dumps in progress (each holds its cursor).
    pub fn active_dumps(&self) -> usize {
        self.conns.iter().filter(|c| c.dump.is_some()).count()
    }

    /// Events lost by subscribers, in all.
    pub fn events_lost(&self) -> u64 {
        self.counters.events_lost
    }

    /// Removes the socket file (at stop).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.cfg.path);
    }
}

/// Appends what `f` writes to `d`, sending full datagrams on to `c`'s queue.
fn queue(
    c: &mut Conn,
    d: &mut Datagram,
    f: impl Fn(&mut isopath_proto::nl::Encoder<'_>) -> Result<(), isopath_proto::error::Full>,
) {
    if d.push(&f).is_err() {
        if !d.is_empty() {
            c.push(d.bytes().to_vec());
            d.clear();
        }
        if d.push(&f).is_err() {
            warn!("a reply larger than a datagram was dropped");
        }
    }
}

fn queue_error(c: &mut Conn, d: &mut Datagram, h: &Header, errno: i32, ext: &ExtAck<'_>) {
    queue(c, d, |e| put_error(e, h, errno, ext));
}

/// Sends what `c` owes until its socket is full: queued datagrams, then dump parts.
fn flush(c: &mut Conn, counters: &mut NlCounters) {
    if c.closed {
        return;
    }
    loop {
        if let Some(front) = c.out.front() {
            match sock::send_one(&c.fd, front) {
                Ok(true) => {
                    c.out.pop_front();
                    if c.out.is_empty() {
                        c.tail_is_event = false;
                    }
                    continue;
                }
                Ok(false) => return,
                Err(_) => {
                    counters.io_errors += 1;
                    c.closed = true;
                    return;
                }
            }
        }
        let Some(d) = c.dump.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; c.dump_buf];
        match d.next_part(&mut buf) {
            None => {
                c.dump = None;
                return;
            }
            Some(p) => {
                if p.last {
                    c.dump = None;
                }
                if p.len > 0 {
                    buf.truncate(p.len);
                    c.push(buf);
                } else if !p.last {
                    // The dump yielded without a record: go on next turn.
                    return;
                }
            }
        }
        if c.out.len() > MAX_OWED {
            return;
        }
    }
}

fn is_admin(c: &Creds, admin_gid: Option<u32>) -> bool {
    c.uid == 0 || admin_gid.is_some_and(|g| c.gid == g || c.groups.contains(&g))
}

/// Why a peer may not make this request (`None`: it may).
fn refusal(
    r: &Request,
    admin: bool,
    creds: &Creds,
    admin_group: Option<&(String, u32)>,
) -> Option<String> {
    let what = match r {
        Request::GetLink(_)
        | Request::GetBond(_)
        | Request::GetWorker(_)
        | Request::GetStats(_)
        | Request::GetStatus(_)
        | Request::GetCapture(_)
        | Request::GetFlowTable(_)
        | Request::GetConn(_) => return None,
        Request::SetConn(s) if s.join.unwrap_or(0) & Group::Flows.mask() == 0 => return None,
        Request::SetConn(_) => "joining the flows group (it shows who talks to whom)",
        Request::GetFlow(_) => "reading flows (they show who talks to whom)",
        _ => "a change",
    };
    if admin {
        return None;
    }
    let group = match admin_group {
        Some((name, gid)) => format!("membership of group {name} (gid {gid})"),
        None => "an admin group, and none is configured".to_owned(),
    };
    Some(format!(
        "{what} needs root or {group}; the peer (uid {}, gid {}, groups {:?}) has neither",
        creds.uid, creds.gid, creds.groups
    ))
}

fn conn_msg(c: &Conn) -> ConnMsg {
    ConnMsg {
        strict: c.strict,
        dump_buf: c.dump_buf as u32,
        groups: c.groups,
        events_lost: c.lost_total,
        uid: Some(c.creds.uid),
        gid: Some(c.creds.gid),
        pid: Some(c.creds.pid),
        admin: c.admin,
    }
}

fn set_conn(c: &mut Conn, s: &ConnSet) -> Result<(), String> {
    let all: u32 = Group::ALL.iter().map(|g| g.mask()).sum();
    if let Some(b) = s.dump_buf {
        let b = b as usize;
        if !(MIN_DUMP_BUF..=MAX_DATAGRAM).contains(&b) {
            return Err(format!(
                "dump_buf {b} is outside {MIN_DUMP_BUF}..={MAX_DATAGRAM}"
            ));
        }
    }
    for bits in [s.join, s.leave].into_iter().flatten() {
        if bits & !all != 0 {
            return Err(format!("unknown event groups in {bits:#x}"));
        }
    }
    if let Some(b) = s.dump_buf {
        c.dump_buf = b as usize;
    }
    if let Some(strict) = s.strict {
        c.strict = strict;
    }
    c.groups |= s.join.unwrap_or(0);
    c.groups &= !s.leave.unwrap_or(0);
    Ok(())
}

/// Encoding an event (sequence 0, as the kernel's notifications) into a datagram.
trait EncodeEvent {
    fn encode_into(&self, d: &mut Datagram) -> Result<(), isopath_proto::error::Full>;
}

impl EncodeEvent for Message {
    fn encode_into(&self, d: &mut Datagram) -> Result<(), isopath_proto::error::Full> {
        d.push(|e| self.encode(e, 0, 0, 0))
    }
}
