//! `isopath link show` over the netlink-format socket: a dump (or one link) rendered as
//! `ip link` does, or as JSON.

use std::{fmt::Write as _, path::Path};

use isopath_proto::{
    attrs::{EXT_STATS, EXT_XSK_STATS, IFF_LOWER_UP, IFF_PROMISC, IFF_RUNNING, IFF_UP},
    msg::{ConnSet, LinkMsg, LinkQuery, Message, Request},
    nl::{NLM_F_ACK, NLM_F_DUMP},
};
use serde::Serialize;

use super::client::{NlClient, NlError};

/// The links the daemon reports: all of them, or the one named `dev`.
///
/// # Errors
/// The daemon cannot be reached, or refused (`ENODEV` for an unknown `dev`).
pub fn links(socket: &Path, dev: Option<&str>, stats: bool) -> Result<Vec<LinkMsg>, NlError> {
    let mut c = NlClient::connect(socket)?;
    let q = LinkQuery {
        ifindex: None,
        name: dev.map(str::to_owned),
        kind: None,
        ext_mask: stats.then_some(EXT_STATS | EXT_XSK_STATS),
    };
    let flags = if dev.is_none() { NLM_F_DUMP } else { NLM_F_ACK };
    // A dump marked interrupted (a link changed while it ran) is asked again, a few times,
    // saying so; iproute2 only warns "Dump was interrupted and may be inconsistent."
    let mut tries = 0;
    loop {
        let mut out = Vec::new();
        let intr = c.request_each(&Request::GetLink(q.clone()), flags, |m| {
            if let Message::NewLink(l) = m {
                out.push(l);
            }
        })?;
        if !intr || tries == DUMP_RETRIES {
            if intr {
                eprintln!("isopath: dump was interrupted {tries} times and may be inconsistent");
            }
            return Ok(out);
        }
        tries += 1;
        eprintln!(
            "isopath: links changed during the dump; asking again ({tries} of {DUMP_RETRIES})"
        );
    }
}

/// How many times an interrupted dump is asked again.
pub const DUMP_RETRIES: u32 = 3;

/// Sends one change (`link add`, `link del`) and waits for its ack.
///
/// # Errors
/// The daemon cannot be reached, or refused (`EPERM` without the rights, `ENODEV`...).
pub fn change(socket: &Path, request: &Request) -> Result<(), NlError> {
    NlClient::connect(socket)?
        .with_timeout(std::time::Duration::from_secs(10))
        .request(request, false)
        .map(drop)
}

/// `isopath monitor`: joins `groups` (a mask of [`Group::mask`] bits) and prints each event
/// as it comes, like `ip monitor`, until `count` events (0: until interrupted). A lost-events
/// notice (`ENOBUFS`) is printed to stderr and the monitor goes on.
///
/// # Errors
/// The daemon cannot be reached or refused the subscription.
pub fn monitor(
    socket: &Path,
    groups: u32,
    timestamp: bool,
    count: u64,
    out: &mut dyn std::io::Write,
) -> Result<(), NlError> {
    let mut c = NlClient::connect(socket)?.with_timeout(std::time::Duration::from_secs(3600));
    let set = ConnSet {
        strict: None,
        dump_buf: None,
        join: Some(groups),
        leave: None,
    };
    c.request(&Request::SetConn(set), false)?;
    let mut n = 0;
    while count == 0 || n < count {
        for (_, m) in c.recv()? {
            let line = match &m {
                Message::NewLink(l) => Some((
                    l.event_ns,
                    format!("link {}", render(std::slice::from_ref(l), false).trim_end()),
                )),
                Message::DelLink(l) => Some((
                    l.event_ns,
                    format!("link Deleted {}: {}", l.ifindex, l.name),
                )),
                Message::NewBondEvent(e) => Some((
                    Some(e.unix_ns),
                    format!(
                        "bond {} {}{}{}",
                        e.bond.as_deref().unwrap_or("?"),
                        e.kind,
                        e.member
                            .as_ref()
                            .map(|m| format!(" member {m}"))
                            .unwrap_or_default(),
                        e.detail
                            .as_ref()
                            .filter(|d| !d.is_empty())
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    ),
                )),
                Message::NewFlow(f) => {
                    let what = if f.event_ns == f.first_ns {
                        "NEW"
                    } else {
                        "UPDATE"
                    };
                    Some((f.event_ns, flow_event(what, f)))
                }
                Message::DelFlow(f) => Some((f.event_ns, flow_event("DESTROY", f))),
                Message::Error(e) if e.errno() == libc::ENOBUFS => {
                    eprintln!(
                        "isopath monitor: {}",
                        e.ext.msg.as_deref().unwrap_or("events lost")
                    );
                    None
                }
                _ => None,
            };
            if let Some((ns, text)) = line {
                if timestamp {
                    let ns = ns.unwrap_or(0);
                    let _ = write!(
                        out,
                        "[{}.{:06}] ",
                        ns / 1_000_000_000,
                        ns % 1_000_000_000 / 1000
                    );
                }
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
                n += 1;
                if count != 0 && n >= count {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// A flow event as `conntrack -E` prints one: `[NEW] udp src=.. dst=.. sport=.. dport=..`.
fn flow_event(what: &str, f: &isopath_proto::msg::FlowMsg) -> String {
    let ports = match (f.sport, f.dport) {
        (Some(s), Some(d)) => format!(" sport={s} dport={d}"),
        _ => String::new(),
    };
    let state = f
        .tcp_state
        .map(|t| format!(" {}", t.name().to_ascii_uppercase()));
    let reason = f.end_reason.map(|r| format!(" reason={r}"));
    format!(
        "flow [{what}] proto={}{} src={} dst={}{ports} packets={}/{} bytes={}/{} zone={}{}",
        f.proto,
        state.unwrap_or_default(),
        f.src,
        f.dst,
        f.packets_orig,
        f.packets_reply,
        f.bytes_orig,
        f.bytes_reply,
        f.zone,
        reason.unwrap_or_default(),
    )
}

/// `<UP,LOWER_UP>`, as `ip link` prints flags.
fn flag_words(flags: u32) -> String {
    format!("<{}>", flag_names(flags).join(","))
}

/// The names of the `IFF_*` bits set in `flags`, in `ip link`'s order.
fn flag_names(flags: u32) -> Vec<&'static str> {
    [
        (IFF_UP, "UP"),
        (IFF_RUNNING, "RUNNING"),
        (IFF_PROMISC, "PROMISC"),
        (IFF_LOWER_UP, "LOWER_UP"),
    ]
    .iter()
    .filter(|(b, _)| flags & b != 0)
    .map(|(_, w)| *w)
    .collect()
}

/// The links as `ip link show` lays them out: a line per link, and with `stats` the counters
/// beneath it as `ip -s link` does.
pub fn render(links: &[LinkMsg], stats: bool) -> String {
    let mut s = String::new();
    for l in links {
        let _ = write!(
            s,
            "{}: {}: {} kind {}",
            l.ifindex,
            l.name,
            flag_words(l.flags),
            l.kind
        );
        if let Some(m) = &l.master {
            let _ = write!(s, " master {m}");
        }
        if let Some(o) = l.operstate {
            let _ = write!(s, " state {}", o.name().to_uppercase());
        }
        if let Some(q) = l.queues {
            let _ = write!(s, " queues {q}");
        }
        if let Some(b) = l.bind_mode {
            let _ = write!(s, " bind {b}");
        }
        if let Some(x) = l.xdp_mode {
            let _ = write!(s, " xdp {x}");
        }
        if let Some(p) = l.promiscuity.filter(|&p| p > 0) {
            let _ = write!(s, " promiscuity {p}");
        }
        s.push('\n');
        if stats && let Some(t) = &l.stats {
            let _ = writeln!(
                s,
                "    RX:  packets {:>12}  bytes {:>14}",
                t.rx_packets, t.rx_bytes
            );
            let _ = writeln!(
                s,
                "    TX:  packets {:>12}  bytes {:>14}",
                t.tx_packets, t.tx_bytes
            );
            let drops = [
                ("rx_drop_runt", t.rx_drop_runt),
                ("rx_drop_no_output", t.rx_drop_no_output),
                ("rx_drop_backup", t.rx_drop_backup),
                ("rx_drop_no_socket", t.rx_drop_no_socket),
                ("tx_drop_link_down", t.tx_drop_link_down),
                ("tx_drop_ring_full", t.tx_drop_ring_full),
            ];
            let _ = write!(s, "    drops:");
            for (k, v) in drops {
                let _ = write!(s, " {k} {v}");
            }
            s.push('\n');
        }
        if stats && let Some(k) = &l.xsk_stats {
            let _ = writeln!(
                s,
                "    xsk: rx_dropped {} rx_ring_full {} rx_fill_ring_empty_descs {} rx_invalid_descs {} tx_invalid_descs {} tx_ring_empty_descs {}",
                k.rx_dropped,
                k.rx_ring_full,
                k.rx_fill_ring_empty_descs,
                k.rx_invalid_descs,
                k.tx_invalid_descs,
                k.tx_ring_empty_descs
            );
        }
    }
    s
}

/// One link as `isopath -j link show` prints it (the attribute names of `docs/protocol.md`).
#[derive(Debug, Serialize)]
pub struct LinkJson {
    ifindex: u32,
    ifname: String,
    kind: &'static str,
    flags: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operstate: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    master: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queues: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bind_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xdp_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    promiscuity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<StatsJson>,
}

/// A link's counters in JSON.
#[derive(Debug, Serialize)]
pub struct StatsJson {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_drop_runt: u64,
    rx_drop_no_output: u64,
    rx_drop_backup: u64,
    rx_drop_no_socket: u64,
    tx_drop_link_down: u64,
    tx_drop_ring_full: u64,
    xdp_rx_redirect: u64,
}

impl From<&LinkMsg> for LinkJson {
    fn from(l: &LinkMsg) -> Self {
        let flags = flag_names(l.flags);
        Self {
            ifindex: l.ifindex,
            ifname: l.name.clone(),
            kind: l.kind.name(),
            flags,
            operstate: l.operstate.map(|o| o.name()),
            master: l.master.clone(),
            queues: l.queues,
            bind_mode: l.bind_mode.map(|b| b.name()),
            xdp_mode: l.xdp_mode.map(|x| x.name()),
            promiscuity: l.promiscuity,
            stats: l.stats.as_ref().map(|t| StatsJson {
                rx_packets: t.rx_packets,
                rx_bytes: t.rx_bytes,
                tx_packets: t.tx_packets,
                tx_bytes: t.tx_bytes,
                rx_drop_runt: t.rx_drop_runt,
                rx_drop_no_output: t.rx_drop_no_output,
                rx_drop_backup: t.rx_drop_backup,
                rx_drop_no_socket: t.rx_drop_no_socket,
                tx_drop_link_down: t.tx_drop_link_down,
                tx_drop_ring_full: t.tx_drop_ring_full,
                xdp_rx_redirect: t.xdp_rx_redirect,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use isopath_proto::msg::{BindMode, LinkKind, LinkStats, OperState, XdpMode};

    use super::*;

    fn port() -> LinkMsg {
        LinkMsg {
            ifindex: 7,
            name: "m0".into(),
            kind: LinkKind::Port,
            flags: IFF_UP | IFF_RUNNING | IFF_LOWER_UP,
            operstate: Some(OperState::Up),
            mtu: None,
            address: None,
            master: Some("bond0".into()),
            peer: None,
            queues: Some(2),
            bind_mode: Some(BindMode::Copy),
            xdp_mode: Some(XdpMode::Native),
            promiscuity: None,
            stats: Some(LinkStats {
                rx_packets: 10,
                rx_bytes: 640,
                tx_packets: 9,
                tx_bytes: 576,
                rx_drop_runt: 1,
                rx_drop_no_output: 0,
                tx_drop_link_down: 0,
                tx_drop_ring_full: 0,
                rx_drop_backup: 2,
                tx_drop_no_active_member: 0,
                rx_drop_control_full: 0,
                rx_drop_no_socket: 0,
                xdp_rx_redirect: 13,
                to_control: 0,
            }),
            xsk_stats: None,
            stamp_ns: None,
            event_ns: None,
        }
    }

    #[test]
    fn links_render_as_ip_link_does() {
        assert_eq!(
            render(&[port()], false),
            "7: m0: <UP,RUNNING,LOWER_UP> kind port master bond0 state UP queues 2 bind copy xdp native\n"
        );
        let s = render(&[port()], true);
        assert!(
            s.contains("    RX:  packets           10  bytes            640\n"),
            "{s}"
        );
        assert!(
            s.contains(" rx_drop_runt 1 ") && s.contains(" rx_drop_backup 2 "),
            "{s}"
        );
        let j = serde_json::to_string(&LinkJson::from(&port())).unwrap();
        assert!(j.starts_with(r#"{"ifindex":7,"ifname":"m0","kind":"port","flags":["UP","RUNNING","LOWER_UP"],"operstate":"up","master":"bond0""#), "{j}");
        assert!(j.contains(r#""xdp_rx_redirect":13"#), "{j}");
    }
}
