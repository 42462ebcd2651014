//! `isopath flow`: `flow count` on the control socket; `flow show`, `flow flush` and
//! `flow del` on the netlink-format socket (`SOCKET.nl`), where a dump streams: records are
//! printed as they arrive and never held whole.

use std::{
    collections::HashMap,
    ffi::OsString,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Subcommand;
use isopath_proto::{
    frame::MAX_DATAGRAM,
    msg::{
        ConnSet, FlowFilter, FlowMsg, FlowQuery, FlowTuple, Message, Request as NlRequest, TcpState,
    },
    nl::NLM_F_DUMP,
};

use super::{
    dump::state_name,
    reply::{FlowCount, FlowRow},
};
use crate::{
    client::Client,
    nlserver::{cli as nlcli, client::NlClient},
    request::Request,
};

/// `isopath flow ...`.
#[derive(Debug, Subcommand)]
pub enum FlowCmd {
    /// Flows in each worker's table: in use, capacity, inserts, expiries, full.
    Count {
        /// Print the JSON document.
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// The flows, one line each with conntrack's fields, filtered in the daemon:
    /// `flow show [zone Z] [dev DEV] [addr A[/LEN]] [port P] [proto P] [state S]
    /// [min-packets N] [limit N]`.
    Show {
        /// Filters and `limit N`.
        words: Vec<String>,
        /// Print one JSON document (streamed: `{"flows":[...],...}`).
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Removes flows (every one, or those of one `zone`, `dev` or `addr A[/LEN]`), as
    /// `conntrack -F`.
    Flush {
        /// One filter, or none.
        words: Vec<String>,
    },
    /// Removes one flow by its 5-tuple, as `conntrack -D`:
    /// `flow del proto P src A dst B [sport N] [dport N] [zone Z]`.
    Del {
        /// The tuple.
        words: Vec<String>,
    },
}

/// The netlink-format socket beside the control socket.
fn nl_path(socket: &Path) -> PathBuf {
    let mut p: OsString = socket.as_os_str().to_owned();
    p.push(".nl");
    PathBuf::from(p)
}

/// Runs `cmd` against the daemon at `socket`.
///
/// # Errors
/// The daemon cannot be reached, refuses the request, or the arguments are wrong.
pub fn run_cli(socket: &Path, cmd: &FlowCmd) -> anyhow::Result<()> {
    match cmd {
        FlowCmd::Count { json } => {
            let flow = |w: &[&str]| Request::Flow(w.iter().map(|&w| w.to_owned()).collect());
            let c: FlowCount = Client::new(socket).call(&flow(&["count"]))?;
            if *json {
                println!("{}", serde_json::to_string(&c)?);
                return Ok(());
            }
            if c.workers.is_empty() {
                println!("flow tracking is off ([flows] enabled = false)");
            }
            for w in &c.workers {
                println!(
                    "worker {}: {} of {} flows in use, inserts {}, expiries {}, full {}",
                    w.worker, w.in_use, w.capacity, w.inserts, w.expiries, w.full
                );
            }
        }
        FlowCmd::Show { words, json } => {
            let nl = nl_path(socket);
            let q = parse_query(words, &nl)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let shown = show(&nl, &q, *json, &mut out)?;
            out.flush()?;
            if !*json {
                eprintln!("{shown} flow entries have been shown.");
            }
        }
        FlowCmd::Flush { words } => {
            let nl = nl_path(socket);
            let mut q = parse_query(words, &nl)?;
            if q.limit.is_some() {
                bail!("flow flush takes no limit");
            }
            // No filter is everything; the request says so with an empty one.
            q.filter.get_or_insert_with(FlowFilter::any);
            nlcli::change(&nl, &NlRequest::DelFlow(q))?;
            println!("flow table is being flushed.");
        }
        FlowCmd::Del { words } => {
            let nl = nl_path(socket);
            let t = parse_tuple(words)?;
            nlcli::change(
                &nl,
                &NlRequest::DelFlow(FlowQuery {
                    filter: None,
                    limit: None,
                    tuple: Some(t),
                }),
            )?;
            println!("1 flow entry has been deleted.");
        }
    }
    Ok(())
}

/// Streams a flow dump to `out`, as text lines or one JSON document; returns how many flows
/// it printed (the JSON document says whether the dump was marked interrupted; flow dumps
/// are loosely consistent and never are).
///
/// # Errors
/// The daemon refused, or the output failed.
fn show(nl: &Path, q: &FlowQuery, json: bool, out: &mut dyn Write) -> anyhow::Result<u64> {
    let names: HashMap<u32, String> = nlcli::links(nl, None, false)?
        .into_iter()
        .map(|l| (l.ifindex, l.name))
        .collect();
    let mut c = NlClient::connect(nl)?.with_timeout(Duration::from_secs(10));
    c.request(
        &NlRequest::SetConn(ConnSet {
            strict: None,
            dump_buf: Some(MAX_DATAGRAM as u32),
            join: None,
            leave: None,
        }),
        false,
    )?;
    if json {
        out.write_all(b"{\"flows\":[")?;
    }
    let mut n = 0u64;
    let mut err: Option<std::io::Error> = None;
    let intr = c.request_each(&NlRequest::GetFlow(q.clone()), NLM_F_DUMP, |m| {
        let Message::NewFlow(f) = m else { return };
        if err.is_some() {
            return;
        }
        let r = if json {
            let sep: &[u8] = if n == 0 { b"" } else { b"," };
            out.write_all(sep).and_then(|()| {
                serde_json::to_writer(&mut *out, &row(&f, &names)).map_err(std::io::Error::from)
            })
        } else {
            line_of(&f, &names, out)
        };
        match r {
            Ok(()) => n += 1,
            Err(e) => err = Some(e),
        }
    })?;
    if let Some(e) = err {
        return Err(e).context("writing the flows");
    }
    let truncated = q.limit.is_some_and(|l| u64::from(l) == n);
    if json {
        write!(
            out,
            "],\"total\":{n},\"truncated\":{truncated},\"interrupted\":{intr}}}"
        )?;
        writeln!(out)?;
    }
    Ok(n)
}

fn proto_name(f: &FlowMsg) -> &'static str {
    match (f.proto, f.src.is_ipv6()) {
        (6, _) => "tcp",
        (17, _) => "udp",
        (1, false) => "icmp",
        (58, true) => "icmpv6",
        _ => "",
    }
}

/// The JSON row of a flow record (the fields `flow show -j` always had).
fn row(f: &FlowMsg, names: &HashMap<u32, String>) -> FlowRow {
    let secs = |ns: Option<u64>| (ns.unwrap_or(0) as f64 / 1e6).round() / 1e3;
    let name = |i: Option<u32>| i.and_then(|i| names.get(&i).cloned());
    FlowRow {
        proto: match proto_name(f) {
            "" => f.proto.to_string(),
            p => p.to_owned(),
        },
        src: f.src,
        dst: f.dst,
        sport: f.sport.unwrap_or(0),
        dport: f.dport.unwrap_or(0),
        orig_packets: f.packets_orig,
        orig_bytes: f.bytes_orig,
        reply_packets: f.packets_reply,
        reply_bytes: f.bytes_reply,
        state: state_name(f).to_owned(),
        first_seen: secs(f.first_ns),
        last_seen: secs(f.last_ns),
        expires_in_s: f.expires_ms.unwrap_or(0) / 1000,
        ingress: name(f.in_link),
        reply_ingress: name(f.out_link),
        vlan: [f.vlan_outer, f.vlan_inner].into_iter().flatten().collect(),
        zone: f.zone,
        worker: f.worker.unwrap_or(0) as usize,
        slot: (f.id >> 8) as u32,
    }
}

/// Appends `v` in decimal (what `{v}` prints, without the formatting machinery: a dump of
/// a million flows spends most of its time here).
fn push_u64(line: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    line.extend_from_slice(&buf[i..]);
}

/// Appends an address as `{addr}` prints it (IPv4 by hand, IPv6 through its `Display`).
fn push_addr(line: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(v) => {
            let [x, y, z, w] = v.octets();
            for (i, o) in [x, y, z, w].into_iter().enumerate() {
                if i > 0 {
                    line.push(b'.');
                }
                push_u64(line, o.into());
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(line, "{a}");
        }
    }
}

/// Appends `key` then `v`.
fn push_kv(line: &mut Vec<u8>, key: &[u8], v: u64) {
    line.extend_from_slice(key);
    push_u64(line, v);
}

/// Writes one flow as `conntrack -L` prints one, straight from the record: the line is built
/// in a byte buffer and written with one call.
fn line_of(f: &FlowMsg, names: &HashMap<u32, String>, out: &mut dyn Write) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(256);
    line_into(f, names, &mut line);
    out.write_all(&line)
}

/// [`line_of`]'s text, appended to `line`.
fn line_into(f: &FlowMsg, names: &HashMap<u32, String>, line: &mut Vec<u8>) {
    let name = |i: Option<u32>| i.and_then(|i| names.get(&i)).map_or("-", String::as_str);
    let pad = |line: &mut Vec<u8>, from: usize, width: usize| {
        let n = line.len() - from;
        if n < width {
            line.resize(from + width, b' ');
        }
    };
    let proto = proto_name(f);
    let start = line.len();
    if proto.is_empty() {
        push_u64(line, f.proto.into());
    } else {
        line.extend_from_slice(proto.as_bytes());
    }
    pad(line, start, 7);
    // `{:>6}`: the number right-aligned in 6 columns.
    line.push(b' ');
    let mut digits = Vec::with_capacity(20);
    push_u64(&mut digits, f.expires_ms.unwrap_or(0) / 1000);
    line.resize(line.len() + 6usize.saturating_sub(digits.len()), b' ');
    line.extend_from_slice(&digits);
    line.push(b' ');
    match f.tcp_state {
        Some(_) => line.extend_from_slice(state_name(f).as_bytes()),
        None if f.packets_reply == 0 => line.extend_from_slice(b"UNREPLIED"),
        None => line.extend_from_slice(b"ASSURED"),
    }
    let (sp, dp) = (f.sport.unwrap_or(0), f.dport.unwrap_or(0));
    line.extend_from_slice(b" src=");
    push_addr(line, f.src);
    line.extend_from_slice(b" dst=");
    push_addr(line, f.dst);
    push_kv(line, b" sport=", sp.into());
    push_kv(line, b" dport=", dp.into());
    push_kv(line, b" packets=", f.packets_orig);
    push_kv(line, b" bytes=", f.bytes_orig);
    line.extend_from_slice(b" src=");
    push_addr(line, f.dst);
    line.extend_from_slice(b" dst=");
    push_addr(line, f.src);
    push_kv(line, b" sport=", dp.into());
    push_kv(line, b" dport=", sp.into());
    push_kv(line, b" packets=", f.packets_reply);
    push_kv(line, b" bytes=", f.bytes_reply);
    line.extend_from_slice(b" ingress=");
    line.extend_from_slice(name(f.in_link).as_bytes());
    line.extend_from_slice(b" reply_ingress=");
    line.extend_from_slice(name(f.out_link).as_bytes());
    match (f.vlan_outer, f.vlan_inner) {
        (Some(o), Some(i)) => {
            push_kv(line, b" vlan=", o.into());
            push_kv(line, b".", i.into());
        }
        (Some(o), None) => push_kv(line, b" vlan=", o.into()),
        _ => {}
    }
    push_kv(line, b" zone=", f.zone.into());
    push_kv(line, b" worker=", f.worker.unwrap_or(0).into());
    line.push(b'\n');
}

fn proto_number(w: &str) -> anyhow::Result<u8> {
    Ok(match w {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "gre" => 47,
        n => n.parse().with_context(|| {
            format!("proto {n:?}: a name (tcp, udp, icmp, icmpv6, sctp, gre) or 0..255")
        })?,
    })
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> anyhow::Result<T> {
    v.parse()
        .ok()
        .with_context(|| format!("{key} {v:?}: not a valid number"))
}

/// `flow show` and `flow flush` words: filters, and `limit N`.
fn parse_query(words: &[String], nl: &Path) -> anyhow::Result<FlowQuery> {
    let mut f = FlowFilter::any();
    let mut limit = None;
    let mut any = false;
    let mut it = words.iter();
    while let Some(k) = it.next() {
        let v = it
            .next()
            .with_context(|| format!("{k:?} needs a value; filters: zone, dev, addr, port, proto, state, min-packets, limit"))?;
        any = true;
        match k.as_str() {
            "zone" => f.zone = Some(num(k, v)?),
            "dev" => {
                let l = nlcli::links(nl, Some(v), false).with_context(|| format!("dev {v:?}"))?;
                f.link = l.first().map(|l| l.ifindex);
            }
            "addr" | "src" | "dst" => {
                let (a, len) = match v.split_once('/') {
                    Some((a, l)) => (a, Some(num::<u8>("prefix length", l)?)),
                    None => (v.as_str(), None),
                };
                f.addr = Some(a.parse::<IpAddr>().with_context(|| format!("addr {a:?}"))?);
                f.prefix_len = len;
            }
            "port" => f.l4_port = Some(num(k, v)?),
            "proto" => f.proto = Some(proto_number(v)?),
            "state" => {
                f.tcp_state = Some(
                    TcpState::parse(&v.to_ascii_lowercase())
                        .or_else(|| (v.eq_ignore_ascii_case("close")).then_some(TcpState::Close))
                        .with_context(|| {
                            format!(
                                "state {v:?}: a TCP state (SYN_SENT, ESTABLISHED, TIME_WAIT, ...)"
                            )
                        })?,
                );
            }
            "min-packets" => f.min_packets = Some(num(k, v)?),
            "limit" => {
                let n: u32 = num(k, v)?;
                if n == 0 {
                    bail!("limit 0: expected at least 1");
                }
                limit = Some(n);
            }
            other => bail!(
                "unknown filter {other:?}; filters: zone, dev, addr, port, proto, state, min-packets, limit"
            ),
        }
    }
    let filter = (any && f != FlowFilter::any()).then_some(f);
    Ok(FlowQuery {
        filter,
        limit,
        tuple: None,
    })
}

/// `flow del` words: `proto P src A dst B [sport N] [dport N] [zone Z]`.
fn parse_tuple(words: &[String]) -> anyhow::Result<FlowTuple> {
    let (mut proto, mut src, mut dst, mut sport, mut dport, mut zone) =
        (None, None, None, None, None, None);
    let mut it = words.iter();
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k:?} needs a value"))?;
        match k.as_str() {
            "proto" => proto = Some(proto_number(v)?),
            "src" => src = Some(v.parse::<IpAddr>().with_context(|| format!("src {v:?}"))?),
            "dst" => dst = Some(v.parse::<IpAddr>().with_context(|| format!("dst {v:?}"))?),
            "sport" => sport = Some(num(k, v)?),
            "dport" => dport = Some(num(k, v)?),
            "zone" => zone = Some(num(k, v)?),
            other => bail!(
                "unknown word {other:?}; usage: flow del proto P src A dst B [sport N] [dport N] [zone Z]"
            ),
        }
    }
    let usage = "usage: flow del proto P src A dst B [sport N] [dport N] [zone Z]";
    Ok(FlowTuple {
        zone,
        proto: proto.context(usage)?,
        src: src.context(usage)?,
        dst: dst.context(usage)?,
        sport,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> FlowMsg {
        FlowMsg {
            id: 7 << 8,
            zone: 0,
            proto: 6,
            src: "198.18.0.1".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            sport: Some(40001),
            dport: Some(9001),
            in_link: Some(4),
            out_link: Some(5),
            tcp_state: Some(TcpState::Established),
            packets_orig: 10,
            bytes_orig: 1000,
            packets_reply: 5,
            bytes_reply: 260,
            first_ns: Some(1_000_000_000),
            last_ns: Some(2_000_000_000),
            worker: Some(0),
            event_ns: None,
            vlan_outer: Some(100),
            vlan_inner: None,
            expires_ms: Some(299_500),
            end_reason: None,
        }
    }

    fn names() -> HashMap<u32, String> {
        [(4, "up0".to_owned()), (5, "m0".to_owned())].into()
    }

    #[test]
    fn a_line_reads_like_conntrack() {
        let mut out = Vec::new();
        line_of(&flow(), &names(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "tcp        299 ESTABLISHED src=198.18.0.1 dst=198.18.0.2 sport=40001 dport=9001 \
             packets=10 bytes=1000 src=198.18.0.2 dst=198.18.0.1 sport=9001 dport=40001 \
             packets=5 bytes=260 ingress=up0 reply_ingress=m0 vlan=100 zone=0 worker=0\n"
        );
        let udp = FlowMsg {
            proto: 17,
            tcp_state: None,
            packets_reply: 0,
            out_link: None,
            vlan_outer: None,
            ..flow()
        };
        let mut out = Vec::new();
        line_of(&udp, &names(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("udp        299 UNREPLIED src="), "{text}");
        assert!(text.contains("reply_ingress=- zone=0"), "{text}");
    }

    /// The `write!` line [`line_of`] replaced, kept as its reference.
    fn reference_line(f: &FlowMsg, names: &HashMap<u32, String>) -> String {
        use std::fmt::Write as _;
        let name = |i: Option<u32>| i.and_then(|i| names.get(&i)).map_or("-", String::as_str);
        let mut out = String::new();
        let proto = proto_name(f);
        if proto.is_empty() {
            write!(out, "{:<7}", f.proto).unwrap();
        } else {
            write!(out, "{proto:<7}").unwrap();
        }
        let (sp, dp) = (f.sport.unwrap_or(0), f.dport.unwrap_or(0));
        write!(
            out,
            " {:>6} {} src={} dst={} sport={sp} dport={dp} packets={} bytes={} src={} dst={} sport={dp} dport={sp} packets={} bytes={} ingress={} reply_ingress={}",
            f.expires_ms.unwrap_or(0) / 1000,
            state_name(f),
            f.src,
            f.dst,
            f.packets_orig,
            f.bytes_orig,
            f.dst,
            f.src,
            f.packets_reply,
            f.bytes_reply,
            name(f.in_link),
            name(f.out_link),
        )
        .unwrap();
        match (f.vlan_outer, f.vlan_inner) {
            (Some(o), Some(i)) => write!(out, " vlan={o}.{i}").unwrap(),
            (Some(o), None) => write!(out, " vlan={o}").unwrap(),
            _ => {}
        }
        writeln!(out, " zone={} worker={}", f.zone, f.worker.unwrap_or(0)).unwrap();
        out
    }

    #[test]
    fn the_byte_buffer_line_is_the_formatted_one() {
        let base = flow();
        let cases = [
            base.clone(),
            FlowMsg {
                proto: 47,
                sport: None,
                dport: None,
                tcp_state: None,
                expires_ms: Some(u64::MAX),
                packets_orig: u64::MAX,
                bytes_orig: 0,
                vlan_inner: Some(4094),
                zone: u16::MAX,
                worker: Some(u32::MAX),
                ..base.clone()
            },
            FlowMsg {
                proto: 58,
                src: "2001:db8::1".parse().unwrap(),
                dst: "::ffff:1.2.3.4".parse().unwrap(),
                tcp_state: None,
                packets_reply: 0,
                in_link: Some(99),
                expires_ms: Some(999),
                vlan_outer: None,
                worker: None,
                ..base.clone()
            },
            FlowMsg {
                proto: 1,
                src: "0.0.0.0".parse().unwrap(),
                dst: "255.255.255.255".parse().unwrap(),
                tcp_state: None,
                expires_ms: None,
                sport: Some(65535),
                dport: Some(0),
                ..base.clone()
            },
            FlowMsg {
                tcp_state: Some(TcpState::Close),
                expires_ms: Some(123_456_789_000),
                ..base
            },
        ];
        for f in &cases {
            let mut out = Vec::new();
            line_of(f, &names(), &mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), reference_line(f, &names()));
        }
    }

    #[test]
    fn a_json_row_has_the_fields_flow_show_always_had() {
        let r = row(&flow(), &names());
        assert_eq!((r.proto.as_str(), r.state.as_str()), ("tcp", "ESTABLISHED"));
        assert_eq!(
            (r.ingress.as_deref(), r.reply_ingress.as_deref()),
            (Some("up0"), Some("m0"))
        );
        assert_eq!((r.first_seen, r.last_seen, r.expires_in_s), (1.0, 2.0, 299));
        assert_eq!((r.vlan, r.slot), (vec![100], 7));
    }

    #[test]
    fn words_become_filters_and_tuples_or_clear_errors() {
        let w = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let nl = Path::new("/nonexistent");
        let q = parse_query(
            &w("zone 2 addr 198.18.0.0/16 port 53 proto udp min-packets 3 limit 10"),
            nl,
        )
        .unwrap();
        let f = q.filter.unwrap();
        assert_eq!(
            (f.zone, f.prefix_len, f.l4_port, f.proto, f.min_packets),
            (Some(2), Some(16), Some(53), Some(17), Some(3))
        );
        assert_eq!(q.limit, Some(10));
        assert_eq!(
            parse_query(&w("state established"), nl)
                .unwrap()
                .filter
                .unwrap()
                .tcp_state,
            Some(TcpState::Established)
        );
        assert!(parse_query(&[], nl).unwrap().filter.is_none());
        for bad in [
            "zone",
            "zone x",
            "limit 0",
            "colour red",
            "proto tcpx",
            "state open",
            "addr 1.2.3",
        ] {
            assert!(parse_query(&w(bad), nl).is_err(), "{bad}");
        }
        let t = parse_tuple(&w(
            "proto udp src 198.18.0.1 dst 198.18.0.2 sport 1000 dport 53",
        ))
        .unwrap();
        assert_eq!(
            (t.proto, t.sport, t.dport, t.zone),
            (17, Some(1000), Some(53), None)
        );
        assert!(parse_tuple(&w("proto udp src 198.18.0.1")).is_err());
    }
}
