//! IPFIX export read back by a real collector: `nfcapd` (Debian `nfdump` 1.7.1) listens in
//! the far namespace, reached from the appliance namespace (where isopathd runs) over a veth
//! pair of its own (`ipx0` 198.18.3.1/30 ↔ `ipx1` 198.18.3.2/30; the lab's namespaces and
//! everything in them go when the lab drops). Known flows (TCP, UDP both ways, ping; IPv4 and
//! IPv6) go through the datapath and end on short idle timeouts; `nfdump -r` of nfcapd's file
//! shows each with the packets and L3 bytes the datapath counted, per direction (the sum of
//! its interim and final records: the active timeout is 1 s), and no sequence errors. Then,
//! with the collector stopped, traffic still goes through untouched and the exporter counts
//! its failed sends.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use isopath_tests::{
    ChildGuard, Lab, bin,
    isopathd::{Isopathd, PORTS, assert_clean_stop, assert_frames_add_up, lab_config, u},
    nft::wire_sized_packets,
    require_privileges,
};
use serde_json::Value;

const COLLECTOR: &str = "198.18.3.2";
const APP_SIDE: &str = "198.18.3.1";

/// Short idle timeouts (the flows end within seconds), interim records every second.
fn config(lab: &Lab) -> String {
    let extra = format!(
        "{PORTS}[flows]\ncapacity = 65536\ntcp_established_s = 30\ntcp_syn_s = 5\n\
         tcp_fin_wait_s = 3\ntcp_closed_s = 3\nudp_s = 3\nudp_stream_s = 3\nicmp_s = 3\n\
         [ipfix]\nobservation_domain_id = 7\nactive_timeout_s = 1\ntemplate_refresh_s = 600\n\
         [[ipfix.collector]]\naddress = \"{COLLECTOR}\"\n"
    );
    lab_config(lab, "", &extra)
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The collector's link: a veth pair from the appliance namespace to the far one.
fn collector_link(lab: &Lab) {
    let far = lab.ns_far().to_owned();
    ok(
        &lab.exec(
            lab.ns_app(),
            [
                "ip", "link", "add", "ipx0", "type", "veth", "peer", "name", "ipx1", "netns", &far,
            ],
        ),
        "veth",
    );
    for (ns, dev, addr) in [
        (lab.ns_app(), "ipx0", APP_SIDE),
        (lab.ns_far(), "ipx1", COLLECTOR),
    ] {
        ok(
            &lab.exec(ns, ["ip", "addr", "add", &format!("{addr}/30"), "dev", dev]),
            "addr",
        );
        ok(&lab.exec(ns, ["ip", "link", "set", dev, "up"]), "up");
    }
}

/// Starts nfcapd in the far namespace writing into `dir`; returns once its socket is bound.
fn nfcapd(lab: &Lab, dir: &Path) -> ChildGuard {
    let mut c = ChildGuard::new(lab.spawn(
        lab.ns_far(),
        [
            "nfcapd",
            "-w",
            dir.to_str().unwrap(),
            "-b",
            COLLECTOR,
            "-p",
            "4739",
            "-t",
            "3600",
        ],
    ))
    .with_label("nfcapd");
    let t = Instant::now();
    loop {
        let out = lab.exec(lab.ns_far(), ["ss", "-Hlun", "sport", "=", ":4739"]);
        if String::from_utf8_lossy(&out.stdout).contains(COLLECTOR) {
            return c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "nfcapd not listening: {}",
            c.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the datapath counted of a flow: (orig packets, orig bytes, reply packets, reply bytes).
type Counts = (u64, u64, u64, u64);

/// A flow's identity in both readings: source, destination, protocol number, ports (0 for
/// ICMP, whose echo identifier the export does not carry as a port).
type Key = (String, String, u8, u16, u16);

/// The one flow from `src` to `dst` of `proto` in `flow show -j`, with its counts.
fn datapath_flow(d: &Isopathd, proto: &str, src: &str, dst: &str) -> (Key, Counts) {
    let v: Value = serde_json::from_str(&d.cli(&["flow", "show", "limit", "1000", "-j"]))
        .expect("flow show JSON");
    let fs: Vec<&Value> = v["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| f["proto"] == proto && f["src"] == src && f["dst"] == dst)
        .collect();
    let num = match proto {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        p => panic!("{p}"),
    };
    let icmp = num == 1 || num == 58;
    // ICMP flows are keyed by the echo identifier, which the export leaves out (ports 0):
    // every ICMP flow of these addresses is one key at the collector, so they are summed
    // here too (neighbour discovery between the same two addresses would be one more; the
    // test's exact counts below say if there was any).
    if !icmp {
        assert_eq!(fs.len(), 1, "one {proto} flow {src} -> {dst}: {v:#}");
    }
    assert!(!fs.is_empty(), "no {proto} flow {src} -> {dst}: {v:#}");
    let port = |k: &str| if icmp { 0 } else { u(fs[0], k) as u16 };
    let sum = |k: &str| fs.iter().map(|f| u(f, k)).sum::<u64>();
    (
        (
            src.to_owned(),
            dst.to_owned(),
            num,
            port("sport"),
            port("dport"),
        ),
        (
            sum("orig_packets"),
            sum("orig_bytes"),
            sum("reply_packets"),
            sum("reply_bytes"),
        ),
    )
}

fn tcp_transfer(lab: &Lab, dst: &str, sport: u16, bytes: u64) {
    let bench = bin("isopath-bench");
    let mut rx = ChildGuard::new(lab.spawn(
        lab.ns_far(),
        [
            bench.to_str().unwrap(),
            "tcp-recv",
            "--bind",
            dst,
            "--timeout-secs",
            "20",
        ],
    ));
    assert!(rx.wait_ready(Duration::from_secs(5)));
    let out = lab.exec(
        lab.ns_traffic(),
        [
            bench.to_str().unwrap(),
            "tcp-send",
            "--dst",
            dst,
            "--sport",
            &sport.to_string(),
            "--bytes",
            &bytes.to_string(),
        ],
    );
    ok(&out, "tcp-send");
    let out = rx.wait_output(Duration::from_secs(25));
    let r: Value = serde_json::from_slice(&out.stdout).expect("tcp-recv JSON");
    assert_eq!(u(&r, "received_bytes"), bytes, "{r}");
}

/// `n` datagrams of 100 bytes from `from` (port `sport`) to `dst`, all received.
fn udp(lab: &Lab, from: &str, to: &str, sport: u16, dst: &str, n: u64, rate: u64) {
    let rx = lab.udp_recv(to, dst, n, 15);
    let out = lab.exec(
        from,
        [
            bin("isopath-bench").to_str().unwrap(),
            "udp-send",
            "--dst",
            dst,
            "--sport",
            &sport.to_string(),
            "--size",
            "100",
            "--count",
            &n.to_string(),
            "--rate",
            &rate.to_string(),
        ],
    );
    ok(&out, "udp-send");
    let r: Value = serde_json::from_slice(&rx.wait_output(Duration::from_secs(20)).stdout)
        .expect("udp-recv JSON");
    assert_eq!(u(&r, "received"), n, "{r}");
}

fn ping(lab: &Lab, dst: &str) {
    ok(
        &lab.exec(
            lab.ns_traffic(),
            ["ping", "-c", "3", "-i", "0.2", "-W", "2", dst],
        ),
        "ping",
    );
}

/// Waits until every worker's table is empty (every flow ended and was exported).
fn wait_all_ended(d: &Isopathd) {
    let t = Instant::now();
    loop {
        let c: Value = serde_json::from_str(&d.cli(&["flow", "count", "-j"])).expect("count");
        if u(&c["workers"][0], "in_use") == 0 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "flows still live: {c}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the collector has of one flow: its counts summed over its records, how many records,
/// and each record's ingress interface and TCP flags as nfdump prints them.
#[derive(Debug, Default)]
struct Collected {
    counts: Counts,
    records: u64,
    ingress: BTreeSet<String>,
    flags: BTreeSet<String>,
}

/// Every record in the nfcapd file of `dir`, per flow key; the number of records; nfdump's
/// count of sequence failures.
fn collected(dir: &Path) -> (BTreeMap<Key, Collected>, u64, u64) {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("nfcapd.2"))
        })
        .collect();
    assert_eq!(files.len(), 1, "one nfcapd file: {files:?}");
    let f = files[0].to_str().unwrap();
    let out = std::process::Command::new("nfdump")
        .args(["-r", f, "-o", "csv"])
        .output()
        .expect("nfdump");
    ok(&out, "nfdump -o csv");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    // A header line, the records, then a summary after a `Summary` line.
    let head: Vec<&str> = lines.next().expect("csv header").split(',').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).expect(name);
    let (sa, da, sp, dp, pr) = (col("sa"), col("da"), col("sp"), col("dp"), col("pr"));
    let (ipkt, ibyt, opkt, obyt) = (col("ipkt"), col("ibyt"), col("opkt"), col("obyt"));
    let (input, flg) = (col("in"), col("flg"));
    let mut flows: BTreeMap<Key, Collected> = BTreeMap::new();
    let mut records = 0;
    for l in lines
        .take_while(|l| *l != "Summary")
        .filter(|l| !l.trim().is_empty())
    {
        let v: Vec<&str> = l.split(',').collect();
        let n = |i: usize| v[i].trim().parse::<u64>().unwrap_or_else(|_| panic!("{l}"));
        let proto = match v[pr].trim() {
            "TCP" => 6,
            "UDP" => 17,
            "ICMP" => 1,
            "ICMP6" | "IPv6-ICMP" => 58,
            p => p.parse().unwrap_or(0),
        };
        let icmp = proto == 1 || proto == 58;
        let port = |i: usize| {
            if icmp {
                0
            } else {
                v[i].trim().parse::<u16>().unwrap_or_else(|_| panic!("{l}"))
            }
        };
        let key = (
            v[sa].to_owned(),
            v[da].to_owned(),
            proto,
            port(sp),
            port(dp),
        );
        let c = flows.entry(key).or_default();
        c.counts.0 += n(ipkt);
        c.counts.1 += n(ibyt);
        c.counts.2 += n(opkt);
        c.counts.3 += n(obyt);
        c.records += 1;
        c.ingress.insert(v[input].trim().to_owned());
        c.flags.insert(v[flg].trim().to_owned());
        records += 1;
    }
    let out = std::process::Command::new("nfdump")
        .args(["-r", f, "-I"])
        .output()
        .expect("nfdump -I");
    ok(&out, "nfdump -I");
    let info = String::from_utf8_lossy(&out.stdout);
    let seq = info
        .lines()
        .find_map(|l| l.strip_prefix("Sequence failures:"))
        .unwrap_or_else(|| panic!("no sequence failures line: {info}"))
        .trim()
        .parse()
        .unwrap();
    (flows, records, seq)
}

/// Every drop counter of every port, summed.
fn datapath_drops(s: &Value) -> u64 {
    s["ports"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["drops"].as_object().unwrap().values())
        .map(|v| v.as_u64().unwrap())
        .sum()
}

#[test]
fn nfcapd_decodes_each_flow_with_the_datapaths_counts() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("ipx");
    wire_sized_packets(&lab);
    collector_link(&lab);
    let dir = std::env::temp_dir().join(format!("isopath-ipfix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let collector = nfcapd(&lab, &dir);
    let d = Isopathd::start(&lab, &config(&lab), &[]);

    let (t4, f4) = (Lab::TRAFFIC_IP, Lab::FAR_IP);
    let (t6, f6) = (Lab::TRAFFIC_IP6, Lab::FAR_IP6);
    let mut want: BTreeMap<Key, Counts> = BTreeMap::new();
    // TCP over IPv4 and IPv6: 2 MB each, lasting over several 1 s active timeouts' worth of
    // interim records on a loaded machine or one final record on a quick one.
    for (src, dst, to, sport) in [
        (t4, f4, format!("{f4}:9001"), 40001),
        (t6, f6, format!("[{f6}]:9002"), 40002),
    ] {
        tcp_transfer(&lab, &to, sport, 2_000_000);
        // The last ACKs land; then the counts are final (the flow lives 3 s more).
        std::thread::sleep(Duration::from_millis(300));
        let (k, c) = datapath_flow(&d, "tcp", src, dst);
        assert!(c.1 > 2_000_000 && c.2 > 0, "{k:?} {c:?}");
        want.insert(k, c);
    }
    // UDP both ways on one 5-tuple over IPv4 for 1.5 s (interim records), one way over IPv6.
    udp(
        &lab,
        lab.ns_traffic(),
        lab.ns_far(),
        5001,
        &format!("{f4}:5002"),
        300,
        200,
    );
    udp(
        &lab,
        lab.ns_far(),
        lab.ns_traffic(),
        5002,
        &format!("{t4}:5001"),
        40,
        2000,
    );
    udp(
        &lab,
        lab.ns_traffic(),
        lab.ns_far(),
        5003,
        &format!("[{f6}]:5004"),
        50,
        2000,
    );
    let (k, c) = datapath_flow(&d, "udp", t4, f4);
    // L3 bytes: 20 (IPv4) + 8 (UDP) + 100.
    assert_eq!(c, (300, 300 * 128, 40, 40 * 128), "{k:?}");
    want.insert(k, c);
    let (k, c) = datapath_flow(&d, "udp", t6, f6);
    // 40 (IPv6) + 8 + 100.
    assert_eq!(c, (50, 50 * 148, 0, 0), "{k:?}");
    want.insert(k, c);
    ping(&lab, f4);
    ping(&lab, f6);
    let (k, c) = datapath_flow(&d, "icmp", t4, f4);
    assert_eq!(c, (3, 3 * 84, 3, 3 * 84), "{k:?}");
    want.insert(k, c);
    let (k, c) = datapath_flow(&d, "icmpv6", t6, f6);
    assert_eq!(c, (3, 3 * 104, 3, 3 * 104), "{k:?}");
    want.insert(k, c);

    wait_all_ended(&d);
    // The exporter sends a message at most 100 ms after its first record.
    std::thread::sleep(Duration::from_millis(500));
    let s = d.status();
    let x = &s["ipfix"];
    assert_eq!(
        x["collectors"],
        serde_json::json!([format!("{COLLECTOR}:4739")])
    );
    assert_eq!(u(x, "observation_domain_id"), 7, "{x}");
    assert_eq!(
        (u(x, "dropped_channel"), u(x, "send_errors"), u(x, "flows")),
        (0, 0, 0),
        "{x}"
    );
    assert_eq!(u(x, "templates"), 1, "{x}");
    let records = u(x, "records");
    assert!(records >= want.len() as u64, "{x}");

    // SIGTERM: nfcapd writes its file out and renames it.
    let out = collector.stop();
    let after = u(&d.status()["ipfix"], "records");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (got, nf_records, seq_failures) = collected(&dir);
    assert_eq!(
        seq_failures, 0,
        "nfdump -I: sequence failures; nfcapd: {log}"
    );
    // nfcapd's own summary at exit, per exporter.
    assert!(log.contains("Sequence Errors: 0"), "{log}");
    // Every record the exporter sent reached the file (the lab does not lose datagrams);
    // `after` allows for a flow of the hosts' own (neighbour discovery) that ended between
    // the status and the collector's stop.
    assert!(
        records <= nf_records && nf_records <= after,
        "{records} <= {nf_records} <= {after}: {x}"
    );
    // Every known flow entered by up0 (the traffic side opened it): its kernel ifindex.
    let up0: Value = serde_json::from_slice(
        &lab.exec(lab.ns_app(), ["ip", "-j", "link", "show", "up0"])
            .stdout,
    )
    .expect("ip -j link");
    let up0 = up0[0]["ifindex"].as_u64().expect("ifindex").to_string();
    for (k, c) in &want {
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("flow {k:?} not collected: {got:#?}"));
        assert_eq!(g.counts, *c, "flow {k:?}: collected {g:?}");
        assert_eq!(
            g.ingress,
            BTreeSet::from([up0.clone()]),
            "flow {k:?}: {g:?}"
        );
        // The initiator's flags (nfdump prints them as "...AP.SF"): a TCP connection's
        // opener sent SYN, ACK and FIN; other protocols none.
        for f in &g.flags {
            let tcp = f.contains('S') && f.contains('A') && f.contains('F');
            assert_eq!(tcp, k.2 == 6, "flow {k:?}: flags {f:?} in {g:?}");
        }
    }
    // The UDP stream lasted 1.5 s: interim records (active timeout 1 s) and a final one,
    // whose deltas add up to the counts above.
    let k4 = want.keys().find(|k| k.2 == 17 && k.3 == 5001).unwrap();
    assert!(got[k4].records >= 2, "UDP records: {:?}", got[k4]);
    eprintln!("collected: {got:?}\nnfcapd: {log}");

    // The collector down: traffic goes through as before, the exporter counts failed sends
    // (ECONNREFUSED from the far namespace's port unreachable), the datapath drops nothing.
    let drops = datapath_drops(&d.status());
    // 4 s at 200/s: interim records every second, so several messages; about every other
    // one is refused (a send reports the ICMP error the one before it caused).
    udp(
        &lab,
        lab.ns_traffic(),
        lab.ns_far(),
        6001,
        &format!("{f4}:6002"),
        800,
        200,
    );
    wait_all_ended(&d);
    std::thread::sleep(Duration::from_millis(500));
    let s = d.status();
    let y = &s["ipfix"];
    eprintln!("before the collector stopped: {x}\nafter: {y}");
    assert!(u(y, "messages") >= u(x, "messages") + 3, "{y}");
    assert!(u(y, "send_errors") >= 2, "{y}");
    assert!(
        u(y, "send_errors") <= u(y, "messages") - u(x, "messages"),
        "{y}"
    );
    assert_eq!(u(y, "dropped_channel"), 0, "{y}");
    assert_eq!(datapath_drops(&s), drops, "{s:#}");
    assert_frames_add_up(&s);
    assert_clean_stop(&d.stop());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The exporter's records per second: `isopath-bench gen` makes tens of thousands of UDP
/// flows, `flow flush` ends them all at once, and the exporter's `records` counter is read
/// every 20 ms while their destroy events become records. Every flow is one record at
/// nfcapd (no loss between the worker and the collector: the event ring holds them all, the
/// channel and the collector's socket keep up), and the rate is printed for
/// `deploy/README.md`.
#[test]
fn exporter_records_per_second_on_a_flush() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("ipr");
    collector_link(&lab);
    let dir = std::env::temp_dir().join(format!("isopath-ipfix-rate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let collector = nfcapd(&lab, &dir);
    let extra = format!(
        "{PORTS}[flows]\ncapacity = 262144\nevent_ring = 262144\n\
         [ipfix]\nactive_timeout_s = 0\n[[ipfix.collector]]\naddress = \"{COLLECTOR}\"\n"
    );
    let d = Isopathd::start(&lab, &lab_config(&lab, "", &extra), &[]);
    const FLOWS: u64 = 60_000;
    let g = lab.exec(
        lab.ns_traffic(),
        [
            bin("isopath-bench").to_str().unwrap(),
            "gen",
            "--iface",
            "t0",
            "--source",
            "xsk",
            "--core",
            "0",
            "--flows",
            &FLOWS.to_string(),
            "--rate",
            "50k",
            "--secs",
            "3",
        ],
    );
    ok(&g, "gen");
    let g: Value = serde_json::from_slice(&g.stdout).expect("gen JSON");
    // Frame i goes to flow i % flows: every flow had a frame.
    assert!(u(&g, "sent") >= FLOWS, "{g}");
    let flows_now = || {
        let c: Value = serde_json::from_str(&d.cli(&["flow", "count", "-j"])).expect("count");
        u(&c["workers"][0], "in_use")
    };
    std::thread::sleep(Duration::from_millis(300));
    let n = flows_now();
    // The generator's flows (nearly all: a flow whose every frame a busy machine lost at
    // the socket is missing), whatever the far host answered (ICMP port unreachable) and the
    // hosts' own. Whatever the table holds is what the flush must turn into records.
    assert!(n >= FLOWS * 9 / 10, "{n} flows");
    let before = d.status()["ipfix"].clone();
    assert_eq!(u(&before, "records"), 0, "{before}");
    d.cli(&["flow", "flush"]);
    let t0 = Instant::now();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut last = 0;
    loop {
        let r = u(&d.status()["ipfix"], "records");
        let t = t0.elapsed();
        samples.push((t, r));
        if r >= n || (r == last && r > 0 && t > Duration::from_secs(3)) {
            break;
        }
        assert!(t < Duration::from_secs(30), "records {r} of {n}");
        last = r;
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = d.status();
    let x = &s["ipfix"];
    let records = u(x, "records");
    assert_eq!(
        records + u(x, "dropped_channel"),
        n,
        "every flushed flow is a record or a counted drop: {x}"
    );
    assert_eq!(u(x, "dropped_channel"), 0, "{x}");
    // The rate between the first and the last sample that saw records move.
    let first = samples.iter().find(|s| s.1 > 0).unwrap();
    let done = samples.iter().find(|s| s.1 == records).unwrap();
    let secs = (done.0 - first.0).as_secs_f64().max(0.02);
    let rate = (records - first.1) as f64 / secs;
    eprintln!(
        "ipfix rate: {records} records in {:.3} s after the flush ({:.0} records/s between \
         samples; first records after {:?}); {} messages",
        done.0.as_secs_f64(),
        rate,
        first.0,
        u(x, "messages")
    );
    std::thread::sleep(Duration::from_millis(300));
    drop(collector.stop());
    let (_, nf_records, seq_failures) = collected(&dir);
    assert_eq!(nf_records, records, "nfcapd got every record");
    assert_eq!(seq_failures, 0);
    assert_clean_stop(&d.stop());
    let _ = std::fs::remove_dir_all(&dir);
}
