//! The control socket's requests: dispatch, replies, and the requests whose reply waits for a
//! state the loop revisits.
//!
//! `port add` hands a port's sockets to the workers and returns; the loop finishes it (fills
//! the XSKMAP, registers the port, replies) on the first turn after the workers have taken
//! them, so miimon, ARP probes and captures go on meanwhile instead of waiting in the handler.

use std::{io::Write, os::unix::net::UnixStream, time::Duration};

use tracing::warn;

use super::{Daemon, ports::PendingPort};
use crate::{
    host::Host,
    registry::DeviceKind,
    request::{Reply, Request},
};

/// What [`Daemon::handle`] made of a request.
pub(super) enum Step {
    /// The reply, now.
    Now(Reply),
    /// A port being added: the reply comes when the loop finishes it, then `Then`.
    Wait(Box<PendingPort>, Then),
}

/// What a finished port add answers.
pub(super) enum Then {
    /// `port add`: the port.
    Reply,
    /// `bond add` of a new interface: the join, into this bond.
    Join(String),
}

/// Where a waiting request's reply goes.
pub(super) enum ReplyTo {
    /// A line-protocol connection.
    Line(UnixStream),
    /// A request of a netlink-format connection.
    Nl(crate::nlserver::ConnId, isopath_proto::nl::Header),
    /// Nobody waits (a port a reload added): the outcome is logged.
    Log,
}

/// A request waiting for its port.
pub(super) struct Waiting {
    reply_to: ReplyTo,
    pub(super) port: Box<PendingPort>,
    then: Then,
}

impl Waiting {
    pub(super) fn new(reply_to: ReplyTo, port: Box<PendingPort>, then: Then) -> Self {
        Self {
            reply_to,
            port,
            then,
        }
    }
}

/// Writes `reply` as one JSON line, blocking and bounded: a client that does not read it holds
/// the loop at most this long (a status reply fits the socket's buffer).
fn write_reply(stream: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut w = stream;
    serde_json::to_writer(&mut w, reply)?;
    w.write_all(b"\n")
}

impl Daemon {
    /// Answers the control connections whose request has arrived (or is late or unreadable);
    /// the others wait for a later turn ([`Server::poll`]).
    pub(super) fn serve_control(&mut self, host: &dyn Host) {
        for (stream, line) in self.server.poll(self.plane.turn.now) {
            let step = match line {
                Err(e) => Step::Now(Reply::error(format!("reading the request: {e}"))),
                Ok(line) => match Request::parse(&line) {
                    Ok(request) => self.handle(request, host),
                    Err(e) => Step::Now(Reply::error(e)),
                },
            };
            match step {
                Step::Now(reply) => self.send(&stream, &reply),
                Step::Wait(port, then) => self.waiting.push(Waiting {
                    reply_to: ReplyTo::Line(stream),
                    port,
                    then,
                }),
            }
        }
    }

    /// Finishes the waiting requests whose state has come (a port's sockets taken, or its
    /// wait over) and replies to them; the others wait for a later turn.
    pub(super) fn advance_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let taken = self.taken();
        let now = self.plane.turn.now;
        let (due, wait): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.port.due(&taken, now));
        self.waiting = wait;
        for Waiting {
            reply_to,
            port,
            then,
        } in due
        {
            let name = port.name.clone();
            let reply = match (self.port_finish(*port), then) {
                (Ok(added), Then::Reply) => Reply::PortAdded(added),
                (Ok(_), Then::Join(bond)) => self
                    .bond_member(&bond, &name, true)
                    .map_or_else(Reply::error, Reply::Member),
                (Err(e), _) => Reply::error(e),
            };
            match reply_to {
                ReplyTo::Line(stream) => self.send(&stream, &reply),
                ReplyTo::Nl(conn, header) => self.nl_reply(conn, &header, reply),
                ReplyTo::Log => match reply {
                    Reply::Error(e) => tracing::error!(port = %name, "reload: adding: {}", e.error),
                    _ => tracing::info!(port = %name, "reload: port added"),
                },
            }
        }
    }

    /// Writes `reply`, counting a refusal or a failed write as a bad request.
    fn send(&mut self, stream: &UnixStream, reply: &Reply) {
        match write_reply(stream, reply) {
            Ok(()) if reply.is_ok() => {}
            Ok(()) => self.bad_requests += 1,
            Err(e) => {
                self.bad_requests += 1;
                warn!("control request: {e:#}");
            }
        }
    }

    /// Carries out one request: its reply, or the state it waits for; then what the
    /// listeners queued of promiscuity is applied, before the reply goes.
    pub(super) fn handle(&mut self, request: Request, host: &dyn Host) -> Step {
        let step = self.handle_one(request, host);
        self.settle_promisc();
        step
    }

    fn handle_one(&mut self, request: Request, host: &dyn Host) -> Step {
        let done = |r: Result<Reply, String>| Step::Now(r.unwrap_or_else(Reply::error));
        match request {
            Request::Status => Step::Now(Reply::Status(Box::new(self.status()))),
            Request::BondSwitch { bond, member } => {
                done(self.bond_switch(&bond, &member).map(Reply::Switched))
            }
            Request::BondRelease { bond, port } => {
                done(self.bond_member(&bond, &port, false).map(Reply::Member))
            }
            // An interface that is not a port yet is added as one first (as `ip link set IF
            // master BOND` takes any interface); it joins once added.
            Request::BondAdd { bond, port }
                if self
                    .registry
                    .devices()
                    .id_of(&bond, DeviceKind::Bond)
                    .is_some()
                    && self
                        .registry
                        .devices()
                        .id_of(&port, DeviceKind::Port)
                        .is_none()
                    && !self.waiting.iter().any(|w| w.port.name == port) =>
            {
                match self.port_begin(&port, host) {
                    Ok(p) => Step::Wait(Box::new(p), Then::Join(bond)),
                    Err(e) => Step::Now(Reply::error(e)),
                }
            }
            Request::BondAdd { bond, port } => {
                done(self.bond_member(&bond, &port, true).map(Reply::Member))
            }
            Request::PortDel(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                done(self.port_del(&names).map(Reply::PortsRemoved))
            }
            Request::PortAdd(name) => match self.port_begin(&name, host) {
                Ok(p) => Step::Wait(Box::new(p), Then::Reply),
                Err(e) => Step::Now(Reply::error(e)),
            },
            Request::BondSet {
                bond,
                option,
                value,
            } => done(self.bond_set(&bond, &option, &value).map(Reply::OptionSet)),
            Request::CaptureStart { target, file, dir } => {
                done(self.capture_start(&target, &file, &dir).map(Reply::Capture))
            }
            Request::CaptureStop(target) => done(self.capture_stop(&target).map(Reply::Capture)),
            Request::Reload => done(self.reload(host).map(Reply::Reloaded)),
            Request::LinkPromisc { dev, on } => done(self.link_promisc(&dev, on).map(Reply::Link)),
            Request::Flow(words) => {
                let readers: Vec<_> = self
                    .plane
                    .workers
                    .iter()
                    .map(|w| w.handle.flow_reader())
                    .collect();
                let words: Vec<&str> = words.iter().map(String::as_str).collect();
                done(
                    crate::flows::answer(&words, &readers, &self.plane.flow_ports).map(Reply::Flow),
                )
            }
        }
    }
}
