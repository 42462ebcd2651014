//! The mixed-traffic fixture (`tests/fixtures/mixed.pcap`): it is what the project's generator
//! makes, the packet views parse each frame as the generator says (every parse-error reason at
//! least once), and tshark, reading the same file, agrees with the views on every frame:
//! protocols, VLAN ids, addresses, fragments, ports, TCP flags, ICMP types and the IPv4 header
//! checksum's validity. Needs tshark (scripts/deps.sh installs it), not root.

use std::{collections::BTreeSet, process::Command};

use isopath_datapath::wire::{
    ArpPacket, Fragment, FrameClass, Ipv4Packet, Ipv6Packet, ParseError, parse,
};
use isopath_tests::{fixture, repo_root};

fn fixture_path() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/mixed.pcap")
}

#[test]
fn the_stored_fixture_is_what_the_generator_makes() {
    let made = fixture::pcap(&fixture::mixed_traffic());
    if std::env::var_os("ISOPATH_WRITE_FIXTURES").is_some() {
        std::fs::write(fixture_path(), &made).unwrap();
    }
    let stored = std::fs::read(fixture_path()).expect("tests/fixtures/mixed.pcap");
    assert!(
        stored == made,
        "tests/fixtures/mixed.pcap differs from the generator's output; regenerate it with \
         ISOPATH_WRITE_FIXTURES=1 cargo test -p isopath-tests --test pcap_fixture"
    );
}

#[test]
fn the_views_parse_every_frame_as_the_generator_says() {
    let frames = fixture::mixed_traffic();
    let stored = fixture::read_pcap(&std::fs::read(fixture_path()).unwrap());
    assert_eq!(stored.len(), frames.len());
    let mut reasons = BTreeSet::new();
    for (f, bytes) in frames.iter().zip(&stored) {
        let h = parse(bytes);
        assert_eq!(h.error, f.error, "{}: {h:?}", f.label);
        reasons.extend(h.error.map(|e| e.name()));
    }
    let all: BTreeSet<&str> = ParseError::ALL.iter().map(|e| e.name()).collect();
    assert_eq!(reasons, all, "every reason appears in the fixture");
    // The traffic the issue asks for is there.
    let classes: BTreeSet<FrameClass> = stored.iter().map(|f| parse(f).class).collect();
    for c in [
        FrameClass::Ipv4,
        FrameClass::Ipv6,
        FrameClass::Arp,
        FrameClass::Lldp,
    ] {
        assert!(classes.contains(&c), "{c:?}");
    }
}

const FIELDS: [&str; 25] = [
    "frame.protocols",
    "ieee8021ad.id",
    "vlan.id",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.flags.mf",
    "ip.frag_offset",
    "ip.checksum.status",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.fraghdr.offset",
    "ipv6.fraghdr.more",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.flags",
    "udp.srcport",
    "udp.dstport",
    "icmp.type",
    "icmp.code",
    "icmp.ident",
    "icmpv6.type",
    "icmpv6.code",
    "icmpv6.echo.identifier",
    "arp.opcode",
];

/// tshark's reading of the fixture: one map of field -> its values (comma-separated) per frame.
fn tshark() -> Option<Vec<std::collections::BTreeMap<&'static str, String>>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(fixture_path()).args([
        "-n",
        "-o",
        "ip.defragment:FALSE",
        "-o",
        "ipv6.defragment:FALSE",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if std::env::var_os("ISOPATH_REQUIRE_PRIV").is_some() => {
            panic!("tshark: {e} (scripts/deps.sh installs it)")
        }
        Err(e) => {
            eprintln!("SKIP: tshark: {e} (scripts/deps.sh installs it)");
            return None;
        }
    };
    assert!(out.status.success(), "tshark: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        text.lines()
            .map(|l| {
                FIELDS
                    .iter()
                    .copied()
                    .zip(l.split('|').map(str::to_owned))
                    .filter(|(_, v)| !v.is_empty())
                    .collect()
            })
            .collect(),
    )
}

#[test]
fn tshark_and_the_views_agree_on_every_frame() {
    let Some(records) = tshark() else {
        return;
    };
    let frames = fixture::mixed_traffic();
    assert_eq!(records.len(), frames.len(), "one tshark record per frame");
    let mut compared_l4 = 0;
    for (i, (f, t)) in frames.iter().zip(&records).enumerate() {
        let ctx = format!("frame {} ({}): tshark {t:?}", i + 1, f.label);
        let first = |k: &str| {
            t.get(k)
                .map(|v| v.split(',').next().unwrap_or("").to_owned())
        };
        let num = |k: &str| first(k).map(|v| v.parse::<u64>().expect(k));
        let hex = |k: &str| {
            first(k).map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).expect(k))
        };
        let protos: Vec<&str> = t["frame.protocols"].split(':').collect();
        let has = |p: &str| protos.contains(&p);
        let h = parse(&f.bytes);
        // VLAN tags (802.1ad service tags first): the ones we read are tshark's first ones.
        let vids: Vec<u16> = ["ieee8021ad.id", "vlan.id"]
            .iter()
            .filter_map(|k| t.get(k))
            .flat_map(|v| v.split(','))
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(usize::from(h.tags) <= vids.len(), "{ctx}");
        assert_eq!(
            &h.vlan[..usize::from(h.tags)],
            &vids[..usize::from(h.tags)],
            "{ctx}"
        );
        if h.error == Some(ParseError::TooManyVlanTags) {
            assert!(vids.len() > 2, "{ctx}");
        } else {
            assert_eq!(usize::from(h.tags), vids.len(), "{ctx}");
        }
        if h.l3 == 0 {
            continue; // no L3 header reached
        }
        let l3 = &f.bytes[usize::from(h.l3)..];
        match h.class {
            FrameClass::Ipv4 => {
                assert!(has("ip"), "{ctx}");
                if let Ok(ip) = Ipv4Packet::new_checked(l3) {
                    assert_eq!(first("ip.src"), Some(ip.src().to_string()), "{ctx}");
                    assert_eq!(first("ip.dst"), Some(ip.dst().to_string()), "{ctx}");
                    assert_eq!(num("ip.proto"), Some(u64::from(ip.protocol_raw())), "{ctx}");
                    assert_eq!(
                        num("ip.flags.mf"),
                        Some(u64::from(ip.more_frags())),
                        "{ctx}"
                    );
                    // tshark counts the offset in 8-byte units.
                    let off = num("ip.frag_offset").map(|o| o * 8);
                    assert_eq!(off, Some(u64::from(ip.frag_offset())), "{ctx}");
                    let good = ip.verify_checksum();
                    assert_eq!(num("ip.checksum.status"), Some(u64::from(good)), "{ctx}");
                    assert_eq!(good, h.error != Some(ParseError::BadIpv4Checksum), "{ctx}");
                }
            }
            FrameClass::Ipv6 => {
                assert!(has("ipv6"), "{ctx}");
                if let Ok(ip) = Ipv6Packet::new_checked(l3) {
                    assert_eq!(first("ipv6.src"), Some(ip.src().to_string()), "{ctx}");
                    assert_eq!(first("ipv6.dst"), Some(ip.dst().to_string()), "{ctx}");
                }
                if h.error.is_none() {
                    let (off, more) = (num("ipv6.fraghdr.offset"), first("ipv6.fraghdr.more"));
                    let want = match h.frag {
                        Fragment::No => (None, None),
                        Fragment::First => (Some(0), Some("1".to_owned())),
                        Fragment::Later => (off.filter(|&o| o > 0), Some("0".to_owned())),
                    };
                    assert_eq!((off, more), want, "{ctx}");
                }
            }
            FrameClass::Arp => {
                assert!(has("arp"), "{ctx}");
                if h.error.is_none() {
                    let a = ArpPacket::new_checked(l3).unwrap();
                    assert_eq!(
                        num("arp.opcode"),
                        Some(u64::from(u16::from(a.op()))),
                        "{ctx}"
                    );
                } else {
                    // Cut before the operation: tshark cannot read one either.
                    assert_eq!(first("arp.opcode"), None, "{ctx}");
                }
            }
            FrameClass::Lldp => assert!(has("lldp"), "{ctx}"),
            FrameClass::Other => {
                assert!(!has("ip") && !has("ipv6") && !has("arp"), "{ctx}")
            }
        }
        if h.error.is_some() || !matches!(h.class, FrameClass::Ipv4 | FrameClass::Ipv6) {
            continue;
        }
        if h.frag == Fragment::Later {
            assert!(!has("tcp") && !has("udp") && !has("icmp"), "{ctx}");
            continue;
        }
        compared_l4 += 1;
        let (sport, dport) = (Some(u64::from(h.sport)), Some(u64::from(h.dport)));
        match h.proto {
            6 => {
                assert!(has("tcp"), "{ctx}");
                assert_eq!(
                    (num("tcp.srcport"), num("tcp.dstport")),
                    (sport, dport),
                    "{ctx}"
                );
                assert_eq!(hex("tcp.flags"), Some(u64::from(h.tcp_flags)), "{ctx}");
            }
            17 => {
                assert!(has("udp"), "{ctx}");
                assert_eq!(
                    (num("udp.srcport"), num("udp.dstport")),
                    (sport, dport),
                    "{ctx}"
                );
            }
            1 => {
                assert!(has("icmp"), "{ctx}");
                let tc = (num("icmp.type").unwrap() << 8) | num("icmp.code").unwrap();
                assert_eq!(Some(tc), dport, "{ctx}");
                assert_eq!(num("icmp.ident"), sport, "{ctx}");
            }
            58 => {
                assert!(has("icmpv6"), "{ctx}");
                let tc = (num("icmpv6.type").unwrap() << 8) | num("icmpv6.code").unwrap();
                assert_eq!(Some(tc), dport, "{ctx}");
                if let Some(id) = hex("icmpv6.echo.identifier") {
                    assert_eq!(Some(id), sport, "{ctx}");
                }
            }
            p => panic!("{ctx}: protocol {p} in the fixture"),
        }
    }
    assert!(compared_l4 >= 20, "L4 compared on {compared_l4} frames");
}
