//! The protocol codec on the dump path: encoding flow records into 32 KiB dump parts and
//! decoding them again, against `netlink-packet-core` doing the same job. Decides README
//! "Chosen crates" (why the codec is our own). Run: `cargo bench -p isopath-proto --bench proto`.
//!
//! Three encoders of the same 18-attribute record:
//! - `own`: [`Part::push`], straight into the part buffer;
//! - `crate_vec`: the crate's usual shape, a `Vec<DefaultNla>` per record (what its message
//!   types do), then `Emitable::emit`;
//! - `crate_borrowed`: the crate without allocation, an `Nla` enum borrowing the record, an
//!   array of 18 on the stack, `buffer_len` then `emit` (two passes over the record).

use std::{hint::black_box, net::IpAddr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use isopath_proto::{
    attr::Ctx,
    attrs::flow,
    dump::Part,
    msg::{FlowMsg, Message, TcpState, kind},
    nl::{self, messages},
};
use netlink_packet_core::{DefaultNla, Emitable, Nla, NlasIterator};

const RECORDS: u64 = 10_000;
const PART: usize = 32 * 1024;

fn record(i: u64) -> FlowMsg {
    FlowMsg {
        id: i,
        zone: 0,
        proto: 17,
        src: IpAddr::from([198, 18, (i >> 8) as u8, i as u8]),
        dst: IpAddr::from([198, 19, 0, 1]),
        sport: Some(1024 + (i as u16 & 0x3fff)),
        dport: Some(9),
        in_link: Some(7),
        out_link: Some(8),
        tcp_state: Some(TcpState::None),
        packets_orig: i,
        bytes_orig: i * 64,
        packets_reply: 0,
        bytes_reply: 0,
        first_ns: Some(i),
        last_ns: Some(i + 1),
        worker: Some(0),
        event_ns: None,
        vlan_outer: None,
        vlan_inner: None,
        expires_ms: Some(30_000),
        end_reason: None,
    }
}

enum FlowNla<'a> {
    U8(u16, u8),
    U16(u16, u16),
    U32(u16, u32),
    U64(u16, u64),
    Ip(u16, &'a IpAddr),
}

impl Nla for FlowNla<'_> {
    fn value_len(&self) -> usize {
        match self {
            Self::U8(..) => 1,
            Self::U16(..) => 2,
            Self::U32(..) => 4,
            Self::U64(..) => 8,
            Self::Ip(_, IpAddr::V4(_)) => 4,
            Self::Ip(_, IpAddr::V6(_)) => 16,
        }
    }
    fn kind(&self) -> u16 {
        match self {
            Self::U8(k, _)
            | Self::U16(k, _)
            | Self::U32(k, _)
            | Self::U64(k, _)
            | Self::Ip(k, _) => *k,
        }
    }
    fn emit_value(&self, b: &mut [u8]) {
        match self {
            Self::U8(_, v) => b[0] = *v,
            Self::U16(_, v) => b.copy_from_slice(&v.to_ne_bytes()),
            Self::U32(_, v) => b.copy_from_slice(&v.to_ne_bytes()),
            Self::U64(_, v) => b.copy_from_slice(&v.to_ne_bytes()),
            Self::Ip(_, IpAddr::V4(a)) => b.copy_from_slice(&a.octets()),
            Self::Ip(_, IpAddr::V6(a)) => b.copy_from_slice(&a.octets()),
        }
    }
}

fn borrowed(f: &FlowMsg) -> [FlowNla<'_>; 18] {
    use FlowNla::*;
    [
        U64(flow::ID, f.id),
        U16(flow::ZONE, f.zone),
        U8(flow::PROTO, f.proto),
        Ip(flow::SRC, &f.src),
        Ip(flow::DST, &f.dst),
        U16(flow::SPORT, f.sport.unwrap_or(0)),
        U16(flow::DPORT, f.dport.unwrap_or(0)),
        U32(flow::IN_LINK, f.in_link.unwrap_or(0)),
        U32(flow::OUT_LINK, f.out_link.unwrap_or(0)),
        U8(flow::TCP_STATE, 0),
        U64(flow::PACKETS_ORIG, f.packets_orig),
        U64(flow::BYTES_ORIG, f.bytes_orig),
        U64(flow::PACKETS_REPLY, f.packets_reply),
        U64(flow::BYTES_REPLY, f.bytes_reply),
        U64(flow::FIRST_NS, f.first_ns.unwrap_or(0)),
        U64(flow::LAST_NS, f.last_ns.unwrap_or(0)),
        U32(flow::WORKER, f.worker.unwrap_or(0)),
        U64(flow::EXPIRES_MS, f.expires_ms.unwrap_or(0)),
    ]
}

fn vec_nlas(f: &FlowMsg) -> Vec<DefaultNla> {
    borrowed(f)
        .iter()
        .map(|n| {
            let mut v = vec![0u8; n.value_len()];
            n.emit_value(&mut v);
            DefaultNla::new(n.kind(), v)
        })
        .collect()
}

/// The crate's part filling: header by hand (it has no part encoder), attributes by `emit`.
fn crate_part<T: Emitable>(buf: &mut [u8], len: &mut usize, attrs: &T) -> bool {
    let need = nl::ATTRS_OFFSET + attrs.buffer_len();
    if *len + need > buf.len() {
        return false;
    }
    let h = nl::Header {
        len: need as u32,
        kind: kind::NEWFLOW,
        flags: nl::NLM_F_MULTI,
        seq: 1,
        pid: 1,
    };
    buf[*len..*len + 16].copy_from_slice(&h.bytes());
    buf[*len + 16..*len + 20].copy_from_slice(&[1, 0, 0, 0]);
    attrs.emit(&mut buf[*len + 20..*len + need]);
    *len += need;
    true
}

fn encode(c: &mut Criterion) {
    let recs: Vec<FlowMsg> = (0..RECORDS).map(record).collect();
    let mut g = c.benchmark_group("dump_encode");
    g.throughput(Throughput::Elements(RECORDS));
    let mut buf = vec![0u8; PART];
    g.bench_function("own", |b| {
        b.iter(|| {
            let mut parts = 0;
            let mut it = recs.iter().peekable();
            while it.peek().is_some() {
                let mut p = Part::new(&mut buf, 1, 1, false);
                while let Some(r) = it.peek() {
                    if p.push(kind::NEWFLOW, *r).is_err() {
                        break;
                    }
                    it.next();
                }
                black_box(p.bytes());
                parts += 1;
            }
            parts
        })
    });
    g.bench_function("crate_vec", |b| {
        b.iter(|| {
            let mut len = 0;
            for r in &recs {
                let nlas = vec_nlas(r);
                if !crate_part(&mut buf, &mut len, &&nlas[..]) {
                    black_box(&buf[..len]);
                    len = 0;
                    crate_part(&mut buf, &mut len, &&nlas[..]);
                }
            }
            len
        })
    });
    g.bench_function("crate_borrowed", |b| {
        b.iter(|| {
            let mut len = 0;
            for r in &recs {
                let nlas = borrowed(r);
                if !crate_part(&mut buf, &mut len, &&nlas[..]) {
                    black_box(&buf[..len]);
                    len = 0;
                    crate_part(&mut buf, &mut len, &&nlas[..]);
                }
            }
            len
        })
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    // The parts of a dump of RECORDS flows, as a client receives them.
    let mut parts = Vec::new();
    let mut buf = vec![0u8; PART];
    let mut next = 0;
    while next < RECORDS {
        let mut p = Part::new(&mut buf, 1, 1, false);
        while next < RECORDS && p.push(kind::NEWFLOW, &record(next)).is_ok() {
            next += 1;
        }
        parts.push(p.bytes().to_vec());
    }
    let mut g = c.benchmark_group("dump_decode");
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("own_typed", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for p in &parts {
                for m in messages(p) {
                    if let Ok(Message::NewFlow(f)) = Message::decode(&m.unwrap(), Ctx::default()) {
                        sum += f.packets_orig;
                    }
                }
            }
            sum
        })
    });
    g.bench_function("crate_iterate", |b| {
        // The crate's attribute iterator, reading one u64 by hand: no policy, no typed record.
        b.iter(|| {
            let mut sum = 0u64;
            for p in &parts {
                for m in messages(p) {
                    let m = m.unwrap();
                    for a in NlasIterator::new(&m.payload[nl::ISOMSG_LEN..]) {
                        let a = a.unwrap();
                        if a.kind() == flow::PACKETS_ORIG {
                            let v = a.value();
                            sum += u64::from_ne_bytes(v.try_into().unwrap());
                        }
                    }
                }
            }
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
