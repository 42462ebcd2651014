//! Captures on a bond and on its members: what each shows, checked datagram by datagram after
//! reading the pcap files (and `tcpdump -r` must read them too); promiscuity counted, and the
//! kernel's reference held like tcpdump's while the count is above zero.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use isopath_tests::{
    Lab,
    isopathd::{Isopathd, assert_clean_stop, bond_config, socket_path, u},
    require_privileges,
};

const T0_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// (dst UDP port, seq, sent by t0?) of every UDP datagram in a pcap, and the record count.
fn read_pcap(path: &Path) -> (Vec<(u16, u64, bool)>, usize) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "pcap magic");
    let (mut off, mut out, mut n) = (24, Vec::new(), 0);
    while off + 16 <= b.len() {
        let caplen = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        let f = &b[off + 16..off + 16 + caplen];
        n += 1;
        // Ethernet / IPv4 (IHL 5) / UDP / 8-byte sequence number.
        if f.len() >= 50 && f[12..14] == [8, 0] && f[23] == 17 {
            let dport = u16::from_be_bytes([f[36], f[37]]);
            let seq = u64::from_be_bytes(f[42..50].try_into().unwrap());
            out.push((dport, seq, f[6..12] == T0_MAC));
        }
        off += 16 + caplen;
    }
    assert_eq!(off, b.len(), "trailing bytes in {}", path.display());
    (out, n)
}

fn tcpdump_count(path: &Path) -> usize {
    let out = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(path)
        .output()
        .expect("tcpdump");
    assert!(
        out.status.success(),
        "tcpdump -r {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn promiscuity(lab: &Lab, dev: &str) -> u64 {
    u(&lab.link_details(lab.ns_app(), dev), "promiscuity")
}

/// The daemon's promiscuity count of link `dev` (`isopath -j link show DEV`).
fn daemon_promiscuity(lab: &Lab, dev: &str) -> u64 {
    let out = cli(lab, &["link", "show", dev, "-j"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    u(&v[0], "promiscuity")
}

fn cli(lab: &Lab, args: &[&str]) -> String {
    isopath_tests::isopathd::cli(&socket_path(lab), args)
}

/// Sends `n` numbered datagrams to `dst`, where a receiver listens (without one, the far host
/// answers ICMP port unreachable and the sender's next send fails: a datagram never sent).
fn udp(lab: &Lab, from: &str, dst: &str, n: u64) {
    let to = if dst.starts_with(Lab::FAR_IP) {
        lab.ns_far()
    } else {
        lab.ns_traffic()
    };
    let rx = lab.udp_recv(to, dst, n, 5);
    let sent = lab.udp_send(from, 0, dst, 64, n, 5_000);
    assert_eq!(sent["errors"], 0, "{sent}");
    let got = isopath_tests::json_out(&rx.wait_output(Duration::from_secs(10)));
    isopath_tests::assert_udp_accounted(&got, n, "udp through the datapath");
}

fn seqs(v: &[(u16, u64, bool)], port: u16) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for &(p, s, _) in v {
        if p == port {
            *m.entry(s).or_default() += 1;
        }
    }
    m
}

#[test]
fn captures_on_bond_active_and_backup_show_what_crossed_each() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("cap");
    let d = Isopathd::start(&lab, &bond_config(&lab, "", ""), &[]);
    let ping = lab.exec(
        lab.ns_traffic(),
        ["ping", "-c", "2", "-i", "0.2", "-W", "2", Lab::FAR_IP],
    );
    assert!(ping.status.success());
    // Quiet hosts: only the test's own frames cross, so that what reaches the backup (and is
    // counted as rx_drop_backup) is exactly the test's broadcasts, not IPv6 chatter or ARP
    // refreshes arriving at random moments.
    for (ns, cmd) in [
        (
            lab.ns_traffic(),
            vec!["sysctl", "-qw", "net.ipv6.conf.t0.disable_ipv6=1"],
        ),
        (
            lab.ns_far(),
            vec!["sysctl", "-qw", "net.ipv6.conf.br0.disable_ipv6=1"],
        ),
        (
            lab.ns_far(),
            vec![
                "ip",
                "neigh",
                "replace",
                Lab::TRAFFIC_IP,
                "lladdr",
                "02:00:00:00:00:01",
                "dev",
                "br0",
                "nud",
                "permanent",
            ],
        ),
        (
            lab.ns_traffic(),
            vec![
                "ip",
                "neigh",
                "replace",
                Lab::FAR_IP,
                "lladdr",
                "02:00:00:00:00:02",
                "dev",
                "t0",
                "nud",
                "permanent",
            ],
        ),
    ] {
        let out = lab.exec(ns, cmd);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let dir = std::env::temp_dir().join(format!("isopath-cap-{}", lab.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |n: &str| dir.join(format!("{n}.pcap"));
    for t in ["bond0", "m0"] {
        cli(&lab, &["capture", "start", t, file(t).to_str().unwrap()]);
    }
    // The backup's drop counter is read right next to its capture's start and stop.
    let backup_before = u(&d.port("m1"), "drops.rx_drop_backup");
    cli(
        &lab,
        &["capture", "start", "m1", file("m1").to_str().unwrap()],
    );
    // Each capture counts one promiscuity holder on its ports (the bond's spans both
    // members): the daemon's count is 2 on each member, the kernel's 1 (only the daemon's
    // 0 -> 1 took the kernel's reference, as dev_set_promiscuity does).
    assert_eq!(
        (
            daemon_promiscuity(&lab, "m0"),
            daemon_promiscuity(&lab, "m1"),
            daemon_promiscuity(&lab, "up0")
        ),
        (2, 2, 0)
    );
    assert_eq!(
        (
            promiscuity(&lab, "m0"),
            promiscuity(&lab, "m1"),
            promiscuity(&lab, "up0")
        ),
        (1, 1, 0)
    );
    assert!(cli(&lab, &["capture", "list"]).contains("bond0"));

    let mut backup_after = 0;
    let n = 300;
    udp(&lab, lab.ns_traffic(), &format!("{}:9000", Lab::FAR_IP), n);
    udp(&lab, lab.ns_far(), &format!("{}:9001", Lab::TRAFFIC_IP), n);
    // Broadcasts from the far side reach the backup too (the bridge floods them).
    let arping = lab.exec(
        lab.ns_far(),
        [
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "-b",
            "198.18.0.255",
        ],
    );
    let _ = arping;
    std::thread::sleep(Duration::from_millis(300));
    for t in ["m1", "bond0", "m0"] {
        let out = cli(&lab, &["capture", "stop", t]);
        assert!(out.contains("\"dropped\": 0"), "{out}");
        if t == "m1" {
            backup_after = u(&d.port("m1"), "drops.rx_drop_backup");
        }
    }
    assert_eq!(
        (promiscuity(&lab, "m0"), promiscuity(&lab, "m1")),
        (0, 0),
        "released at stop"
    );
    assert_eq!(
        (
            daemon_promiscuity(&lab, "m0"),
            daemon_promiscuity(&lab, "m1")
        ),
        (0, 0)
    );
    let backup_drops = backup_after - backup_before;

    let all = |m: &BTreeMap<u64, usize>| m.len() as u64 == n && m.values().all(|&c| c == 1);
    for t in ["bond0", "m0"] {
        let (v, records) = read_pcap(&file(t));
        assert_eq!(
            tcpdump_count(&file(t)),
            records,
            "tcpdump reads every record of {t}"
        );
        // Both directions, every datagram exactly once.
        for port in [9000, 9001] {
            let got = seqs(&v, port);
            let missing: Vec<u64> = (0..n).filter(|s| !got.contains_key(s)).collect();
            assert!(
                all(&got),
                "{t}: port {port}: {} of {n}, missing {missing:?}",
                got.len()
            );
        }
        assert!(
            v.iter().filter(|x| x.0 == 9000).all(|x| x.2),
            "{t}: outbound sent by t0"
        );
    }
    // The backup carried none of the unicast streams; it saw only what arrived there and was
    // dropped: its capture and rx_drop_backup agree.
    let (v, records) = read_pcap(&file("m1"));
    assert_eq!(tcpdump_count(&file("m1")), records);
    assert!(
        v.iter().all(|x| x.0 != 9000 && x.0 != 9001),
        "backup carried stream traffic"
    );
    assert!(records > 0, "flooded broadcasts reached the backup");
    assert_eq!(
        records as u64, backup_drops,
        "backup capture = rx_drop_backup"
    );

    // Direction filter: the bond, inbound only.
    cli(
        &lab,
        &[
            "capture",
            "start",
            "bond0",
            file("bond-in").to_str().unwrap(),
            "--dir",
            "in",
        ],
    );
    udp(&lab, lab.ns_traffic(), &format!("{}:9000", Lab::FAR_IP), 50);
    udp(&lab, lab.ns_far(), &format!("{}:9001", Lab::TRAFFIC_IP), 50);
    std::thread::sleep(Duration::from_millis(200));
    cli(&lab, &["capture", "stop", "bond0"]);
    let (v, _) = read_pcap(&file("bond-in"));
    assert_eq!(seqs(&v, 9001).len(), 50);
    assert_eq!(
        seqs(&v, 9000).len(),
        0,
        "outbound frames in an inbound capture"
    );

    // Bad requests: unknown target, relative path, a second capture on the same target.
    for req in [
        "capture start nosuch /tmp/x.pcap both",
        "capture start m0 relative.pcap both",
        "capture start m0 /tmp/x.pcap sideways",
        "capture stop m0",
    ] {
        assert!(d.request(req)["error"].is_string(), "{req}");
    }

    // A capture running when the daemon dies: the kernel releases promiscuity with the socket.
    cli(
        &lab,
        &["capture", "start", "m0", file("killed").to_str().unwrap()],
    );
    assert_eq!(promiscuity(&lab, "m0"), 1);
    d.kill();
    assert_eq!(
        promiscuity(&lab, "m0"),
        0,
        "promiscuity left behind by a killed daemon"
    );
    let d = Isopathd::start(&lab, &bond_config(&lab, "", ""), &[]);
    assert_clean_stop(&d.stop());
    let _ = std::fs::remove_dir_all(dir);
}
