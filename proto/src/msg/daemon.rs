//! The daemon's own objects: workers, traffic totals, status, captures, the client's connection
//! (options, event groups) and error events.

use super::{LinkStats, XskStats};
use crate::{
    attr::{record, wire_enum},
    attrs::{capture, conn, errorev, frames, stats, status, worker, worker_queue},
};

wire_enum! {
    /// The daemon's life-cycle state.
    pub enum DaemonState {
        /// Setting up ports and workers.
        Starting = 1 => "starting",
        /// Forwarding.
        Running = 2 => "running",
        /// Shutting down.
        Stopping = 3 => "stopping",
    }

    /// Which way a capture looks.
    pub enum CaptureDir {
        /// Frames received.
        In = 1 => "in",
        /// Frames sent.
        Out = 2 => "out",
        /// Both.
        Both = 3 => "both",
    }

    /// Where an error event comes from.
    pub enum ErrorKind {
        /// A link (register, unregister, attach).
        Link = 1 => "link",
        /// An XDP program.
        Xdp = 2 => "xdp",
        /// A capture (its file).
        Capture = 3 => "capture",
        /// The rtnetlink socket (overruns: events lost).
        Rtnetlink = 4 => "rtnetlink",
        /// A worker.
        Worker = 5 => "worker",
        /// The control loop.
        Control = 6 => "control",
    }
}

/// An event group a connection can join (`SETCONN` `JOIN`), like an `RTNLGRP_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `NEWLINK`/`DELLINK` events.
    Links = 1,
    /// `NEWBONDEV` events.
    Bonds = 2,
    /// `NEWERROREV` events.
    Errors = 3,
    /// `NEWFLOW`/`DELFLOW` events.
    Flows = 4,
}

impl Group {
    /// Every group.
    pub const ALL: [Group; 4] = [Self::Links, Self::Bonds, Self::Errors, Self::Flows];

    /// Its bit in `conn.JOIN`, `conn.LEAVE` and `conn.GROUPS`: `1 << (group - 1)`, as
    /// `RTMGRP_*` relate to `RTNLGRP_*`.
    pub fn mask(self) -> u32 {
        1 << (self as u32 - 1)
    }

    /// The name `isopath monitor` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Links => "links",
            Self::Bonds => "bonds",
            Self::Errors => "errors",
            Self::Flows => "flows",
        }
    }
}

record! {
    /// A worker: a `GETWORKER` reply or dump record.
    pub struct WorkerMsg: worker {
        /// Index.
        req index: u32 = INDEX,
        /// Core.
        req core: u32 = CORE,
        /// Queues polled.
        list queues: WorkerQueue = QUEUES,
        /// Free queue slots.
        req spare_queues: u32 = SPARE_QUEUES,
        /// Loops.
        req loops: u64 = LOOPS,
        /// Busy loops.
        req busy_loops: u64 = BUSY_LOOPS,
        /// Queues attached at run time.
        req queues_attached: u64 = QUEUES_ATTACHED,
        /// Queues retired at run time.
        req queues_retired: u64 = QUEUES_RETIRED,
        /// Frames reclaimed.
        req frames_reclaimed: u64 = FRAMES_RECLAIMED,
        /// Frame audit.
        opt frames: Frames = FRAMES,
        /// Pinned.
        opt pinned: bool = PINNED,
        /// When read.
        opt stamp_ns: u64 = STAMP_NS,
    }

    /// A queue a worker polls.
    pub struct WorkerQueue: worker_queue {
        /// Link.
        req link: String = LINK,
        /// Queue id.
        req queue: u32 = QUEUE,
    }

    /// Where a worker's frames are.
    pub struct Frames: frames {
        /// All.
        req total: u64 = TOTAL,
        /// Free pool.
        req free: u64 = FREE,
        /// Fill rings.
        req in_fill: u64 = IN_FILL,
        /// TX rings.
        req in_tx: u64 = IN_TX,
    }

    /// `GETWORKER`: one worker, or all with `NLM_F_DUMP`.
    pub struct WorkerQuery: worker {
        /// The worker.
        opt index: u32 = INDEX,
    }

    /// Traffic totals: the `GETSTATS` reply.
    pub struct StatsMsg: stats {
        /// When read.
        req stamp_ns: u64 = STAMP_NS,
        /// The link, if the request named one.
        opt link: String = LINK,
        /// Datapath counters summed.
        req totals: LinkStats = TOTALS,
        /// `XDP_STATISTICS` summed.
        opt xsk_stats: XskStats = XSK_STATS,
        /// Last cleared.
        opt cleared_ns: u64 = CLEARED_NS,
    }

    /// `GETSTATS` and `DELSTATS` (`stats clear`): all links, or one.
    pub struct StatsQuery: stats {
        /// The link.
        opt link: String = LINK,
    }

    /// The daemon: the `GETSTATUS` reply.
    pub struct StatusMsg: status {
        /// State.
        req state: DaemonState = STATE,
        /// pid.
        req pid: u32 = PID,
        /// Uptime, ns.
        req uptime_ns: u64 = UPTIME_NS,
        /// Version.
        opt version: String = VERSION,
        /// Links.
        req links: u32 = LINKS,
        /// Bonds.
        req bonds: u32 = BONDS,
        /// Workers.
        req workers: u32 = WORKERS,
        /// Captures.
        req captures: u32 = CAPTURES,
        /// Connections.
        req clients: u32 = CLIENTS,
        /// Requests.
        req requests: u64 = REQUESTS,
        /// Malformed requests.
        req bad_requests: u64 = BAD_REQUESTS,
        /// rtnetlink events.
        opt rtnl_events: u64 = RTNL_EVENTS,
        /// rtnetlink malformed messages.
        opt rtnl_malformed: u64 = RTNL_MALFORMED,
        /// rtnetlink errors.
        opt rtnl_errors: u64 = RTNL_ERRORS,
        /// Events lost by subscribers.
        req events_lost: u64 = EVENTS_LOST,
        /// Dumps started.
        opt dumps: u64 = DUMPS,
        /// Dumps in progress.
        opt dumps_active: u32 = DUMPS_ACTIVE,
        /// Flow events sent.
        opt flow_events: u64 = FLOW_EVENTS,
    }

    /// `GETSTATUS`: no attributes.
    pub struct StatusQuery: status {}

    /// A capture: `GETCAPTURE` reply or dump record, and the reply to `NEWCAPTURE`/`DELCAPTURE`
    /// with `NLM_F_ECHO`.
    pub struct CaptureMsg: capture {
        /// Target.
        req target: String = TARGET,
        /// File.
        req file: String = FILE,
        /// Direction.
        req direction: CaptureDir = DIRECTION,
        /// Captured.
        req captured: u64 = CAPTURED,
        /// Dropped.
        req dropped: u64 = DROPPED,
        /// Written.
        req written: u64 = WRITTEN,
        /// Write errors.
        req write_errors: u64 = WRITE_ERRORS,
        /// Snap length.
        req snaplen: u32 = SNAPLEN,
    }

    /// `NEWCAPTURE` with `NLM_F_CREATE`: `capture start TARGET FILE [--dir in|out|both]`.
    pub struct CaptureStart: capture {
        /// Port or bond.
        req target: String = TARGET,
        /// pcap file, absolute.
        req file: String = FILE,
        /// Direction (default both).
        opt direction: CaptureDir = DIRECTION,
    }

    /// `DELCAPTURE` (`capture stop TARGET`) and `GETCAPTURE` (one, or all with `NLM_F_DUMP`).
    pub struct CaptureRef: capture {
        /// Port or bond.
        opt target: String = TARGET,
    }

    /// The connection as the daemon sees it: the `GETCONN` reply.
    pub struct ConnMsg: conn {
        /// Strict checking on.
        req strict: bool = STRICT,
        /// Dump part size.
        req dump_buf: u32 = DUMP_BUF,
        /// Groups joined.
        req groups: u32 = GROUPS,
        /// Events lost.
        req events_lost: u64 = EVENTS_LOST,
        /// Peer uid.
        opt uid: u32 = UID,
        /// Peer gid.
        opt gid: u32 = GID,
        /// Peer pid.
        opt pid: u32 = PID,
        /// Peer may change things.
        req admin: bool = ADMIN,
    }

    /// `GETCONN`: no attributes.
    pub struct ConnQuery: conn {}

    /// `SETCONN`: connection options, joining and leaving event groups.
    pub struct ConnSet: conn {
        /// Strict checking.
        opt strict: bool = STRICT,
        /// Dump part size.
        opt dump_buf: u32 = DUMP_BUF,
        /// Groups to join.
        opt join: u32 = JOIN,
        /// Groups to leave.
        opt leave: u32 = LEAVE,
    }

    /// An error event: `NEWERROREV` of the `errors` group.
    pub struct ErrorEvent: errorev {
        /// When, Unix ns.
        req unix_ns: u64 = UNIX_NS,
        /// Where.
        req kind: ErrorKind = KIND,
        /// Link.
        opt link: String = LINK,
        /// errno.
        opt errno: i32 = ERRNO,
        /// Text.
        req msg: String = MSG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_masks_are_distinct_bits() {
        let all = Group::ALL.iter().fold(0, |m, g| {
            assert_eq!(m & g.mask(), 0);
            m | g.mask()
        });
        assert_eq!(all, 0b1111);
    }
}
