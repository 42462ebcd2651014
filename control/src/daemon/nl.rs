//! The netlink-format control socket's requests: typed requests of `isopath-proto` answered
//! from the daemon's state, changes carried out by the same handlers as the line protocol's
//! (so both protocols change the daemon identically while the CLI moves over).
//!
//! Served: `GETLINK` (one, or a dump: ports and bonds, with counters when `EXT_STATS` /
//! `EXT_XSK_STATS` are asked for), `GETSTATUS`, `GETWORKER`, `GETCAPTURE` (one or a dump),
//! `NEWLINK` (`port add`), `DELLINK` (`port del`, all or none), `SETLINK` (`promisc on|off`
//! only; up/down and MTU get `EOPNOTSUPP`), `SETBOND` (`bond set`,
//! `bond switch`), `NEWMEMBER`/`DELMEMBER` (`bond add|release`), `NEWCAPTURE`/`DELCAPTURE`;
//! `GETCONN`/`SETCONN` are the server's own. The other types get `EOPNOTSUPP` with a text
//! saying so.

use std::net::IpAddr;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use isopath_proto::{
    attr::Mac,
    attrs::{EXT_STATS, EXT_XSK_STATS, IFF_LOWER_UP, IFF_PROMISC, IFF_RUNNING, IFF_UP},
    dump::{Dump, Part, Step as DumpStep},
    error::Full,
    msg::{
        ArpAllTargets, ArpValidate, BindMode, BondEvent, BondEventKind, BondMode, BondMsg,
        BondNotify, BondOptions, BondSet, BondVlan, CaptureDir, CaptureMsg, DaemonState,
        FailOverMac, Frames, Group, LinkKind, LinkMsg, LinkStats, MemberLink, MemberMsg,
        MemberState as ProtoMemberState, Message, OperState, Request as NlRequest, Reselect,
        StatusMsg, WorkerMsg, WorkerQueue, XdpMode, XskStats, kind,
    },
    nl::Header,
};

use super::{
    Daemon, DevData, Plane, lock,
    requests::{ReplyTo, Step, Waiting},
};
use crate::{
    host::Host,
    nlserver::{Answer, ConnId, Job},
    registry::{self, DeviceKind, Event, Listener, Veto},
    request::{Reply, Request},
    status::{BondStatus, CaptureStatus, PortStatus},
};

/// The link numbers the daemon's own devices (bonds) report: from here on, clear of the
/// kernel's interface indexes, which ports report.
const OWN_INDEX_BASE: u32 = 1 << 20;

/// Follows every device event: bumps the link generation (a link dump that sees it change
/// between parts is marked `NLM_F_DUMP_INTR`) and records the `links` group's event (a
/// `NEWLINK` with the device's new state, a `DELLINK` as it goes) for the loop to broadcast.
pub(super) struct LinkEvents {
    pub(super) generation: Arc<AtomicU64>,
    pub(super) out: Arc<Mutex<Vec<(u64, Message)>>>,
}

/// Most link events kept between two turns of the loop (older ones are dropped).
const MAX_LINK_EVENTS: usize = 1024;

impl Listener<DevData, Plane> for LinkEvents {
    fn name(&self) -> &'static str {
        "link-events"
    }

    fn event(
        &mut self,
        ev: Event,
        devs: &registry::Devices<DevData>,
        cx: &mut Plane,
    ) -> Result<(), Veto> {
        self.generation.fetch_add(1, Ordering::Relaxed);
        let (id, gone) = match ev {
            Event::Register(id) | Event::Up(id) | Event::Down(id) | Event::Change(id) => {
                (id, false)
            }
            Event::Join { port, .. } | Event::Leave { port, .. } => (port, false),
            Event::Active { bond, .. } => (bond, false),
            Event::Unregister(id) => (id, true),
            Event::PreUnregister(_) => return Ok(()),
        };
        let Some(d) = devs.get(id) else {
            return Ok(());
        };
        let msg = LinkMsg {
            event_ns: Some(cx.turn.wall_ns()),
            ..link_base(id, d, d.operstate == registry::OperState::Up)
        };
        let wall = cx.turn.wall_ns();
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if out.len() >= MAX_LINK_EVENTS {
            out.remove(0);
        }
        out.push((
            wall,
            if gone {
                Message::DelLink(msg)
            } else {
                Message::NewLink(msg)
            },
        ));
        Ok(())
    }
}

/// What a link record says of every device: its number (the kernel's index for a port, the
/// daemon's own for a bond), name, kind, flags (a bond is always administratively up) and
/// operational state; the rest unset.
fn link_base(id: registry::DeviceId, d: &registry::Device<DevData>, running: bool) -> LinkMsg {
    let (ifindex, kind) = match d.kind {
        DeviceKind::Port => (d.ifindex.unwrap_or(0), LinkKind::Port),
        DeviceKind::Bond => (OWN_INDEX_BASE + id.index(), LinkKind::Bond),
        DeviceKind::Loopback => (id.index(), LinkKind::Loopback),
    };
    let mut flags = if d.flags.up || d.kind == DeviceKind::Bond {
        IFF_UP
    } else {
        0
    };
    if running {
        flags |= IFF_RUNNING | IFF_LOWER_UP;
    }
    let promiscuity = d.life.promiscuity();
    if promiscuity > 0 {
        flags |= IFF_PROMISC;
    }
    LinkMsg {
        ifindex,
        name: d.name.clone(),
        kind,
        flags,
        operstate: Some(if running {
            OperState::Up
        } else {
            OperState::Down
        }),
        mtu: None,
        address: None,
        master: None,
        peer: None,
        queues: None,
        bind_mode: None,
        xdp_mode: None,
        promiscuity: Some(promiscuity),
        stats: None,
        xsk_stats: None,
        stamp_ns: None,
        event_ns: None,
    }
}

/// A dump of records taken when it began (links, workers, captures: tens of records), sent
/// part by part; marked interrupted when the generation it watches moves.
struct Snapshot {
    kind: u16,
    records: Vec<Message>,
    next: usize,
    generation: Option<Arc<AtomicU64>>,
}

impl Dump for Snapshot {
    fn dump(&mut self, part: &mut Part<'_>) -> DumpStep {
        while let Some(m) = self.records.get(self.next) {
            let r = match m {
                Message::NewLink(b) => part.push(self.kind, b),
                Message::NewWorker(b) => part.push(self.kind, b),
                Message::NewCapture(b) => part.push(self.kind, b),
                Message::NewBond(b) => part.push(self.kind, b),
                _ => Err(Full),
            };
            if r.is_err() {
                return DumpStep::More;
            }
            self.next += 1;
        }
        DumpStep::Finished(0)
    }

    fn generation(&self) -> Option<u64> {
        self.generation.as_ref().map(|g| g.load(Ordering::Relaxed))
    }
}

/// The errno a handler's refusal maps to. The handlers report text today (the line protocol's
/// replies); these are the texts they use for a missing object, a duplicate and a busy one.
fn errno_of(text: &str) -> i32 {
    if text.starts_with("no ") && text.contains(" named ") {
        libc::ENODEV
    } else if text.starts_with("no capture runs") {
        libc::ENOENT
    } else if text.contains("already") {
        libc::EEXIST
    } else if text.contains("too long") {
        libc::ENAMETOOLONG
    } else if text.contains("cross-connected") {
        libc::EBUSY
    } else {
        libc::EINVAL
    }
}

fn answer_of(reply: Reply) -> Answer {
    match reply {
        Reply::Error(e) => Answer::Error(errno_of(&e.error), e.error),
        _ => Answer::Done,
    }
}

/// A bond option of `SETBOND` as the line protocol's (name, value).
fn option_words(o: &BondOptions) -> Vec<(&'static str, String)> {
    let mut w = Vec::new();
    let ms = |v: u32| v.to_string();
    if let Some(v) = o.miimon_ms {
        w.push(("miimon", ms(v)));
    }
    if let Some(v) = o.updelay_ms {
        w.push(("updelay", ms(v)));
    }
    if let Some(v) = o.downdelay_ms {
        w.push(("downdelay", ms(v)));
    }
    if let Some(v) = &o.primary {
        w.push(("primary", v.clone()));
    }
    if let Some(v) = o.primary_reselect {
        w.push(("primary_reselect", v.name().to_owned()));
    }
    if let Some(v) = o.all_members_active {
        w.push(("all_members_active", v.to_string()));
    }
    if let Some(v) = o.drain_ms {
        w.push(("drain_ms", ms(v)));
    }
    if let Some(v) = o.fail_over_mac {
        w.push(("fail_over_mac", v.name().to_owned()));
    }
    if let Some(v) = o.num_grat_arp {
        w.push(("num_grat_arp", ms(v)));
    }
    if let Some(v) = o.num_unsol_na {
        w.push(("num_unsol_na", ms(v)));
    }
    if let Some(v) = o.peer_notif_delay_ms {
        w.push(("peer_notif_delay", ms(v)));
    }
    if let Some(v) = o.reannounce {
        w.push(("reannounce", v.to_string()));
    }
    w
}

/// Whether `o` sets anything [`option_words`] does not carry.
fn unsupported_option(o: &BondOptions) -> Option<&'static str> {
    [
        (o.reannounce_table.is_some(), "reannounce_table"),
        (o.reannounce_max_age_s.is_some(), "reannounce_max_age_s"),
        (o.arp_interval_ms.is_some(), "arp_interval"),
        (!o.arp_ip_target.is_empty(), "arp_ip_target"),
        (!o.ns_ip6_target.is_empty(), "ns_ip6_target"),
        (o.arp_validate.is_some(), "arp_validate"),
        (o.arp_all_targets.is_some(), "arp_all_targets"),
        (o.arp_missed_max.is_some(), "arp_missed_max"),
        (o.link_state_tracking.is_some(), "link_state_tracking"),
    ]
    .into_iter()
    .find_map(|(set, name)| set.then_some(name))
}

fn link_stats(p: &PortStatus) -> LinkStats {
    let d = |k: &str| p.drops.get(k).copied().unwrap_or(0);
    LinkStats {
        rx_packets: p.rx_packets,
        rx_bytes: p.rx_bytes,
        tx_packets: p.tx_packets,
        tx_bytes: p.tx_bytes,
        rx_drop_runt: d("rx_drop_runt"),
        rx_drop_no_output: d("rx_drop_no_output"),
        tx_drop_link_down: d("tx_drop_link_down"),
        tx_drop_ring_full: d("tx_drop_ring_full"),
        rx_drop_backup: d("rx_drop_backup"),
        tx_drop_no_active_member: d("tx_drop_no_active_member"),
        rx_drop_control_full: d("rx_drop_control_full"),
        rx_drop_no_socket: p.xdp.rx_drop_no_socket,
        xdp_rx_redirect: p.xdp.rx_redirect,
        to_control: 0,
    }
}

fn bond_event(bond: &str, e: &crate::bond::Event) -> BondEvent {
    BondEvent {
        bond: Some(bond.to_owned()),
        unix_ns: e.unix_ns,
        kind: BondEventKind::parse(e.kind.name()).unwrap_or(BondEventKind::OptionChanged),
        member: e.member.clone(),
        detail: Some(e.detail.clone()),
        active: None,
    }
}

/// `aa:bb:cc:dd:ee:ff` as a MAC (`None` if it is not one).
fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(Mac(m))
}

fn ms32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A bond's record from its status: options, members, addresses, counters, and its last
/// `events` events.
fn bond_msg(b: &BondStatus, events: usize) -> BondMsg {
    let o = &b.options;
    let ips = |v: &[String]| v.iter().filter_map(|a| a.parse::<IpAddr>().ok()).collect();
    let mut options = BondOptions::none();
    options.miimon_ms = Some(ms32(o.miimon_ms));
    options.updelay_ms = Some(ms32(o.updelay_ms));
    options.downdelay_ms = Some(ms32(o.downdelay_ms));
    options.primary = o.primary.clone();
    options.primary_reselect = Reselect::parse(o.primary_reselect.name());
    options.all_members_active = Some(o.all_members_active);
    options.drain_ms = Some(ms32(o.drain_ms));
    options.fail_over_mac = FailOverMac::parse(o.fail_over_mac.name());
    options.num_grat_arp = Some(o.num_grat_arp);
    options.num_unsol_na = Some(o.num_unsol_na);
    options.peer_notif_delay_ms = Some(ms32(o.peer_notif_delay_ms));
    options.reannounce = Some(o.reannounce);
    options.reannounce_table = Some(o.reannounce_table as u32);
    options.reannounce_max_age_s = Some(u32::from(o.reannounce_max_age_s));
    options.arp_interval_ms = o.arp_interval_ms.map(ms32);
    options.arp_ip_target = o.arp_ip_target.as_deref().map(ips).unwrap_or_default();
    options.arp_validate = o.arp_validate.and_then(|v| ArpValidate::parse(v.name()));
    options.arp_all_targets = o.arp_all_targets.as_deref().and_then(ArpAllTargets::parse);
    options.arp_missed_max = o.arp_missed_max;
    let n = &b.notifications;
    BondMsg {
        name: b.name.clone(),
        mode: BondMode::ActiveBackup,
        carrier: b.carrier == crate::status::Link::Up,
        active: b.active.clone(),
        draining: b
            .members
            .iter()
            .find(|m| m.state == crate::status::MemberState::Draining)
            .map(|m| m.name.clone()),
        failovers: b.failovers,
        options: Some(options),
        address: parse_mac(&b.mac),
        addresses: ips(&b.addresses),
        vlans: b
            .vlans
            .iter()
            .map(|v| BondVlan {
                id: v.id,
                addresses: ips(&v.addresses),
            })
            .collect(),
        notify: Some(BondNotify {
            grat_arp: n.grat_arp,
            unsol_na: n.unsol_na,
            reannounced: n.reannounced,
            mailbox_full: n.mailbox_full,
            rate_limited: n.rate_limited,
        }),
        members: b
            .members
            .iter()
            .map(|m| MemberMsg {
                name: m.name.clone(),
                ifindex: None,
                link: MemberLink::parse(&m.link).unwrap_or(MemberLink::Down),
                state: ProtoMemberState::parse(m.state.name()).unwrap_or(ProtoMemberState::Backup),
                link_failures: m.link_failures,
                prio: m.prio,
                speed_mbps: m.speed_mbps,
                perm_address: parse_mac(&m.perm_mac),
            })
            .collect(),
        events: b
            .events
            .iter()
            .rev()
            .take(events)
            .rev()
            .map(|e| BondEvent {
                bond: None,
                unix_ns: e.unix_ns,
                kind: BondEventKind::parse(e.kind.name()).unwrap_or(BondEventKind::OptionChanged),
                member: e.member.clone(),
                detail: Some(e.detail.clone()),
                active: None,
            })
            .collect(),
        stats: None,
    }
}

fn capture_msg(c: &CaptureStatus) -> CaptureMsg {
    CaptureMsg {
        target: c.target.clone(),
        file: c.file.clone(),
        direction: CaptureDir::parse(&c.direction).unwrap_or(CaptureDir::Both),
        captured: c.captured,
        dropped: c.dropped,
        written: c.written,
        write_errors: c.write_errors,
        snaplen: c.snaplen as u32,
    }
}

impl Daemon {
    /// One turn of the netlink-format socket: the requests that arrived, answered (or held,
    /// for a `port add` that completes on a later turn).
    pub(super) fn serve_netlink(&mut self, host: &dyn Host) {
        let Some(server) = self.nl.as_mut() else {
            return;
        };
        // Both sources, in the order things happened: by time, a bond's own record of a
        // moment before the registry's (the bond decides, the devices follow).
        let links = std::mem::take(
            &mut *self
                .link_events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let bonds = std::mem::take(&mut lock(&self.plane.book).events_out);
        let mut events: Vec<(u64, u8, Group, Message)> = bonds
            .into_iter()
            .map(|(bond, e)| {
                let m = Message::NewBondEvent(bond_event(&bond, &e));
                (e.unix_ns, 0, Group::Bonds, m)
            })
            .chain(links.into_iter().map(|(t, m)| (t, 1, Group::Links, m)))
            .collect();
        events.sort_by_key(|e| (e.0, e.1));
        for (_, _, group, m) in &events {
            server.broadcast(*group, m);
        }
        self.flow_events();
        let Some(server) = self.nl.as_mut() else {
            return;
        };
        for job in server.poll() {
            let header = job.header;
            let conn = job.conn;
            if let Some(answer) = self.nl_handle(job, host)
                && let Some(s) = self.nl.as_mut()
            {
                s.answer(conn, &header, answer);
            }
        }
    }

    /// Sends the reply of a held request.
    pub(super) fn nl_reply(&mut self, conn: ConnId, header: &Header, reply: Reply) {
        if let Some(s) = self.nl.as_mut() {
            s.answer(conn, header, answer_of(reply));
        }
    }

    /// Answers one request; `None` when the reply comes on a later turn.
    fn nl_handle(&mut self, job: Job, host: &dyn Host) -> Option<Answer> {
        let Job {
            conn,
            header,
            dump,
            request,
        } = job;
        let line = |r: Request| Some(r);
        let req = match request {
            NlRequest::GetLink(q) => {
                let ext = q.ext_mask.unwrap_or(0);
                let links = self.links(ext);
                return Some(if dump {
                    let records = links
                        .into_iter()
                        .filter(|l| q.kind.is_none_or(|k| l.kind == k))
                        .map(Message::NewLink)
                        .collect();
                    self.snapshot(kind::NEWLINK, records, true)
                } else {
                    match links.into_iter().find(|l| {
                        q.ifindex.is_none_or(|i| l.ifindex == i)
                            && q.name.as_ref().is_none_or(|n| &l.name == n)
                    }) {
                        Some(l) => Answer::Records(vec![Message::NewLink(l)]),
                        None => Answer::Error(libc::ENODEV, no_link(&q.name, q.ifindex)),
                    }
                });
            }
            NlRequest::GetBond(q) => {
                let events = q.event_limit.map_or(10, |n| n as usize);
                let bonds: Vec<BondMsg> = self
                    .bonds_status()
                    .iter()
                    .map(|b| bond_msg(b, events))
                    .collect();
                return Some(if dump {
                    let records = bonds.into_iter().map(Message::NewBond).collect();
                    self.snapshot(kind::NEWBOND, records, true)
                } else {
                    match bonds.into_iter().find(|b| q.name.as_ref() == Some(&b.name)) {
                        Some(b) => Answer::Records(vec![Message::NewBond(b)]),
                        None => Answer::Error(
                            libc::ENODEV,
                            format!("no bond named {:?}", q.name.unwrap_or_default()),
                        ),
                    }
                });
            }
            NlRequest::GetStatus(_) => {
                return Some(Answer::Records(vec![Message::NewStatus(self.status_msg())]));
            }
            NlRequest::GetWorker(q) => {
                let workers = self.workers_msgs();
                return Some(if dump {
                    let records = workers.into_iter().map(Message::NewWorker).collect();
                    self.snapshot(kind::NEWWORKER, records, false)
                } else {
                    match workers.into_iter().find(|w| Some(w.index) == q.index) {
                        Some(w) => Answer::Records(vec![Message::NewWorker(w)]),
                        None => Answer::Error(
                            libc::ENOENT,
                            format!("no worker {}", q.index.unwrap_or(0)),
                        ),
                    }
                });
            }
            NlRequest::GetCapture(q) => {
                let caps: Vec<CaptureMsg> = self
                    .plane
                    .captures
                    .iter()
                    .map(|c| capture_msg(&c.status()))
                    .collect();
                return Some(if dump {
                    let records = caps.into_iter().map(Message::NewCapture).collect();
                    self.snapshot(kind::NEWCAPTURE, records, false)
                } else {
                    match caps
                        .into_iter()
                        .find(|c| q.target.as_ref() == Some(&c.target))
                    {
                        Some(c) => Answer::Records(vec![Message::NewCapture(c)]),
                        None => Answer::Error(
                            libc::ENOENT,
                            format!("no capture runs on {:?}", q.target.unwrap_or_default()),
                        ),
                    }
                });
            }
            NlRequest::GetFlow(q) => return Some(self.get_flow(q, dump)),
            NlRequest::DelFlow(q) => return Some(self.del_flow(q)),
            NlRequest::GetFlowTable(q) => return Some(self.get_flow_table(q)),
            NlRequest::AddLink(a) => match a.kind {
                None | Some(LinkKind::Port) => line(Request::PortAdd(a.name)),
                Some(k) => {
                    return Some(Answer::Error(
                        libc::EOPNOTSUPP,
                        format!("links of kind {k} cannot be created; only ports"),
                    ));
                }
            },
            NlRequest::DelLink(d) => line(Request::PortDel(d.names)),
            NlRequest::SetLink(s) => return Some(self.set_link(&s, host)),
            NlRequest::SetBond(s) => return Some(self.set_bond(s, host)),
            NlRequest::AddMember(m) => line(Request::BondAdd {
                bond: m.bond,
                port: m.name,
            }),
            NlRequest::DelMember(m) => line(Request::BondRelease {
                bond: m.bond,
                port: m.name,
            }),
            NlRequest::StartCapture(c) => line(Request::CaptureStart {
                target: c.target,
                file: c.file,
                dir: c.direction.unwrap_or(CaptureDir::Both).name().to_owned(),
            }),
            NlRequest::StopCapture(c) => line(Request::CaptureStop(c.target.unwrap_or_default())),
            other => {
                let name = isopath_proto::msg::type_name(other.kind()).unwrap_or("?");
                return Some(Answer::Error(
                    libc::EOPNOTSUPP,
                    format!("{name} is not served by this daemon yet"),
                ));
            }
        };
        let req = req?;
        match self.handle(req, host) {
            Step::Now(reply) => Some(answer_of(reply)),
            Step::Wait(port, then) => {
                self.waiting
                    .push(Waiting::new(ReplyTo::Nl(conn, header), port, then));
                None
            }
        }
    }

    /// `SETLINK`: `promisc on|off` (the operator's promiscuity, counted once); the other
    /// changes (up/down, MTU) are refused with `EOPNOTSUPP`.
    fn set_link(&mut self, s: &isopath_proto::msg::LinkSet, host: &dyn Host) -> Answer {
        let name = match (&s.name, s.ifindex) {
            (Some(n), _) => Some(n.clone()),
            (None, Some(i)) => self
                .links(0)
                .into_iter()
                .find(|l| l.ifindex == i)
                .map(|l| l.name),
            (None, None) => None,
        };
        let Some(dev) = name else {
            return Answer::Error(libc::ENODEV, no_link(&s.name, s.ifindex));
        };
        let other = s.change.unwrap_or(0) & !IFF_PROMISC;
        if other != 0 || s.mtu.is_some() {
            return Answer::Error(
                libc::EOPNOTSUPP,
                format!("{dev}: only promisc on|off can be set on a link here"),
            );
        }
        let Some(on) = s.promisc() else {
            return Answer::Error(libc::EINVAL, format!("{dev}: nothing to change"));
        };
        match self.handle(Request::LinkPromisc { dev, on }, host) {
            Step::Now(reply) => answer_of(reply),
            Step::Wait(..) => Answer::Error(libc::EINVAL, "unexpected wait".into()),
        }
    }

    /// `SETBOND`: the active member first (a planned switch), then each option in turn; stops
    /// at the first refusal (what was set before it stays set, as `ip link set` does with
    /// several options).
    fn set_bond(&mut self, s: BondSet, host: &dyn Host) -> Answer {
        if let Some(o) = &s.options
            && let Some(name) = unsupported_option(o)
        {
            return Answer::Error(
                libc::EOPNOTSUPP,
                format!("{}: option {name} cannot be changed at run time", s.name),
            );
        }
        let mut reqs = Vec::new();
        if let Some(member) = s.active {
            reqs.push(Request::BondSwitch {
                bond: s.name.clone(),
                member,
            });
        }
        for (option, value) in s.options.as_ref().map(option_words).unwrap_or_default() {
            reqs.push(Request::BondSet {
                bond: s.name.clone(),
                option: option.to_owned(),
                value,
            });
        }
        for r in reqs {
            if let Step::Now(Reply::Error(e)) = self.handle(r, host) {
                return Answer::Error(errno_of(&e.error), e.error);
            }
        }
        Answer::Done
    }

    fn snapshot(&self, kind: u16, records: Vec<Message>, links: bool) -> Answer {
        Answer::Dump(Box::new(Snapshot {
            kind,
            records,
            next: 0,
            generation: links.then(|| self.links_gen.clone()),
        }))
    }

    /// Every link: ports (by their kernel index), then bonds.
    fn links(&self, ext: u32) -> Vec<LinkMsg> {
        let stamp = self.plane.turn.wall_ns();
        let book = lock(&self.plane.book);
        let master = |name: &str| {
            book.bonds
                .iter()
                .find(|b| b.members.iter().any(|m| m.name == name && !m.released))
                .map(|b| b.name.clone())
        };
        let mut out = Vec::new();
        let devs = self.registry.devices();
        for (id, d) in devs.iter() {
            match &d.data {
                DevData::Port(p) => {
                    let s = self.port_status(&d.name, p);
                    let running = p.link.is_up();
                    let mut l = LinkMsg {
                        stamp_ns: Some(stamp),
                        ..link_base(id, d, running)
                    };
                    l.master = master(&d.name);
                    l.queues = Some(s.queues as u32);
                    l.bind_mode = s.bind.as_deref().and_then(BindMode::parse);
                    l.xdp_mode = s.xdp_mode.as_deref().and_then(XdpMode::parse);
                    if ext & EXT_STATS != 0 {
                        l.stats = Some(link_stats(&s));
                    }
                    if ext & EXT_XSK_STATS != 0 {
                        let k = s.xsk;
                        l.xsk_stats = Some(XskStats {
                            rx_dropped: k.rx_dropped,
                            rx_invalid_descs: k.rx_invalid_descs,
                            tx_invalid_descs: k.tx_invalid_descs,
                            rx_ring_full: k.rx_ring_full,
                            rx_fill_ring_empty_descs: k.rx_fill_ring_empty_descs,
                            tx_ring_empty_descs: k.tx_ring_empty_descs,
                        });
                    }
                    out.push(l);
                }
                DevData::Bond { index } => {
                    let b = &book.bonds[*index];
                    let running = b.active().is_some();
                    out.push(LinkMsg {
                        stamp_ns: Some(stamp),
                        ..link_base(id, d, running)
                    });
                }
                // Not dumped (yet): the registry's loopback is new; dumps stay as they were.
                DevData::Loopback => {}
            }
        }
        out
    }

    fn workers_msgs(&self) -> Vec<WorkerMsg> {
        let stamp = self.plane.turn.wall_ns();
        self.plane
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let c = w.handle.counters();
                WorkerMsg {
                    index: i as u32,
                    core: w.handle.core().map_or(u32::MAX, |c| c as u32),
                    queues: w
                        .handle
                        .queues()
                        .iter()
                        .map(|q| WorkerQueue {
                            link: q.ifname.clone(),
                            queue: q.queue,
                        })
                        .collect(),
                    spare_queues: w.handle.spare() as u32,
                    loops: c.loops.get(),
                    busy_loops: c.busy_loops.get(),
                    queues_attached: c.queues_attached.get(),
                    queues_retired: c.queues_retired.get(),
                    frames_reclaimed: c.frames_reclaimed.get(),
                    frames: Some(Frames {
                        total: c.frames_total.get(),
                        free: c.frames_free.get(),
                        in_fill: c.frames_in_fill.get(),
                        in_tx: c.frames_in_tx.get(),
                    }),
                    pinned: None,
                    stamp_ns: Some(stamp),
                }
            })
            .collect()
    }

    fn status_msg(&self) -> StatusMsg {
        let devs = self.registry.devices();
        let rtnl = self.rtnl.as_ref();
        let (requests, clients) = self
            .nl
            .as_ref()
            .map_or((0, 0), |s| (s.counters.messages, s.clients() as u32));
        StatusMsg {
            state: DaemonState::Running,
            pid: std::process::id(),
            uptime_ns: self.started.elapsed().as_nanos() as u64,
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            links: devs
                .iter()
                .filter(|(_, d)| d.kind != DeviceKind::Loopback)
                .count() as u32,
            bonds: devs.of_kind(DeviceKind::Bond).count() as u32,
            workers: self.plane.workers.len() as u32,
            captures: self.plane.captures.len() as u32,
            clients,
            requests: requests + self.server.accepted,
            bad_requests: self.bad_requests + self.nl.as_ref().map_or(0, |s| s.counters.malformed),
            rtnl_events: rtnl.map(|r| r.events.load(Ordering::Relaxed)),
            rtnl_malformed: rtnl.map(|r| r.malformed.load(Ordering::Relaxed)),
            rtnl_errors: rtnl.map(|r| r.errors.load(Ordering::Relaxed)),
            events_lost: self.nl.as_ref().map_or(0, |s| s.events_lost()),
            dumps: self.nl.as_ref().map(|s| s.counters.dumps),
            dumps_active: self.nl.as_ref().map(|s| s.active_dumps() as u32),
            flow_events: Some(self.flow_events_sent),
        }
    }
}

fn no_link(name: &Option<String>, ifindex: Option<u32>) -> String {
    match (name, ifindex) {
        (Some(n), _) => format!("no link named {n:?}"),
        (None, Some(i)) => format!("no link with index {i}"),
        (None, None) => "no link given".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_texts_map_to_errnos() {
        assert_eq!(errno_of("no port named \"x\""), libc::ENODEV);
        assert_eq!(errno_of("no bond named \"b\""), libc::ENODEV);
        assert_eq!(errno_of("no port or bond named \"x\""), libc::ENODEV);
        assert_eq!(errno_of("no interface named \"x\""), libc::ENODEV);
        assert_eq!(errno_of("no capture runs on \"x\""), libc::ENOENT);
        assert_eq!(errno_of("m0 is already a port"), libc::EEXIST);
        assert_eq!(errno_of("a capture already runs on m0"), libc::EEXIST);
        assert_eq!(
            errno_of("\"aaaaaaaaaaaaaaaaaaa\": interface name too long"),
            libc::ENAMETOOLONG
        );
        assert_eq!(errno_of("m0 is cross-connected: it cannot"), libc::EBUSY);
        assert_eq!(errno_of("m0 is listed twice"), libc::EINVAL);
    }

    #[test]
    fn bond_options_travel_as_the_line_protocols_words() {
        let mut o = BondOptions::none();
        o.miimon_ms = Some(20);
        o.primary = Some("m1".into());
        o.all_members_active = Some(true);
        assert_eq!(
            option_words(&o),
            vec![
                ("miimon", "20".to_owned()),
                ("primary", "m1".to_owned()),
                ("all_members_active", "true".to_owned()),
            ]
        );
        assert_eq!(unsupported_option(&o), None);
        o.arp_missed_max = Some(3);
        assert_eq!(unsupported_option(&o), Some("arp_missed_max"));
    }
}
