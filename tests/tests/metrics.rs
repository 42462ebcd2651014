//! The Prometheus endpoint on the lab: `promtool check metrics` passes the page, a real
//! Prometheus scrapes the daemon every second (both inside the appliance namespace, on its own
//! loopback), and PromQL over its HTTP API gives exactly what the sender sent and the datapath
//! counted; a bad listen address is refused at start with the field's name.

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use isopath_tests::{
    ChildGuard, Lab,
    isopathd::{Isopathd, PORTS, lab_config},
    json_out, require_privileges,
};
use serde_json::Value;

const EXIT_CONFIG: i32 = 2;
const EXIT_FAILURE: i32 = 1;
/// Where the daemon serves its page (in the appliance namespace's own port space).
const METRICS: &str = "127.0.0.1:9469";
/// Where Prometheus answers (same namespace).
const PROM: &str = "127.0.0.1:9090";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `curl` inside the appliance namespace; returns (exit ok, stdout).
fn curl(lab: &Lab, args: &[&str]) -> (bool, String) {
    let mut a = vec!["curl", "-sS", "--max-time", "5"];
    a.extend_from_slice(args);
    let out = lab.exec(lab.ns_app(), &a);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A PromQL instant query (at `time`, or now); returns the result vector.
fn query(lab: &Lab, q: &str, time: Option<f64>) -> Vec<Value> {
    let mut args = vec![
        "-G".to_owned(),
        format!("http://{PROM}/api/v1/query"),
        "--data-urlencode".to_owned(),
        format!("query={q}"),
    ];
    if let Some(t) = time {
        args.extend(["--data-urlencode".to_owned(), format!("time={t:.3}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, body) = curl(lab, &args);
    assert!(ok, "query {q}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: {e}: {body}"));
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The single value of an instant query, if it has one.
fn scalar(lab: &Lab, q: &str, time: Option<f64>) -> Option<f64> {
    let r = query(lab, q, time);
    assert!(r.len() <= 1, "{q}: more than one series: {r:?}");
    r.first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
}

/// Waits (bounded) until `f` gives a value.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Prometheus server in the appliance namespace scraping the daemon every second, with its
/// data in a directory of its own (removed at drop).
struct Prometheus {
    guard: ChildGuard,
    dir: PathBuf,
}

impl Prometheus {
    fn start(lab: &Lab) -> Self {
        let dir = std::env::temp_dir().join(format!("isopath-prom-{}", lab.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
                 scrape_configs:\n  - job_name: isopath\n    static_configs:\n      \
                 - targets: ['{METRICS}']\n"
            ),
        )
        .unwrap();
        let guard = ChildGuard::new(lab.spawn(
            lab.ns_app(),
            [
                "prometheus".to_owned(),
                format!("--config.file={}", cfg.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address={PROM}"),
                "--log.level=warn".to_owned(),
            ],
        ))
        .with_label("prometheus");
        let p = Self { guard, dir };
        wait_for("prometheus ready", Duration::from_secs(30), || {
            curl(lab, &[&format!("http://{PROM}/-/ready")])
                .0
                .then_some(())
        });
        p
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.guard.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sample value of `line_start` (name and labels) on a page.
fn sample(page: &str, line_start: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn prometheus_scrapes_exact_counts_and_the_page_passes_promtool() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("met");
    // The namespace's own loopback carries the scrapes (the root namespace's is not ours).
    let lo = lab.exec(lab.ns_app(), ["ip", "link", "set", "lo", "up"]);
    assert!(lo.status.success(), "{lo:?}");
    // Only the test's datagrams cross up0 while it counts: no IPv6 chatter (MLD, RS, ND) from
    // t0 and no ARP (the far host's address is a permanent neighbour, resolved by a ping).
    let t = lab.ns_traffic();
    let out = lab.exec(t, ["sysctl", "-qw", "net.ipv6.conf.t0.disable_ipv6=1"]);
    assert!(out.status.success(), "{out:?}");
    let config = format!(
        "{}\n[metrics]\nlisten = \"{METRICS}\"\n",
        lab_config(&lab, "", PORTS)
    );
    let d = Isopathd::start(&lab, &config, &[]);
    lab.ping_far();
    let far_mac = lab.link_details(lab.ns_far(), "br0")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = lab.exec(
        t,
        [
            "ip",
            "neigh",
            "replace",
            Lab::FAR_IP,
            "lladdr",
            &far_mac,
            "dev",
            "t0",
            "nud",
            "permanent",
        ],
    );
    assert!(out.status.success(), "{out:?}");

    // The page: classic text by default, OpenMetrics when asked, and promtool passes it.
    let (ok, head) = curl(
        &lab,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("http://{METRICS}/metrics"),
        ],
    );
    assert!(
        ok && head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let (ok, om) = curl(
        &lab,
        &[
            "-H",
            "Accept: application/openmetrics-text; version=1.0.0",
            &format!("http://{METRICS}/metrics"),
        ],
    );
    assert!(ok && om.ends_with("# EOF\n"), "{om}");
    let (ok, page) = curl(&lab, &[&format!("http://{METRICS}/metrics")]);
    assert!(ok, "{page}");
    let check = {
        use std::io::Write as _;
        let mut c = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus)");
        c.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool check metrics: {check:?}\n{page}"
    );
    for want in [
        "isopath_port_rx_packets_total{port=\"up0\"}",
        "isopath_queue_rx_packets_total{port=\"up0\",queue=\"0\",worker=\"0\"}",
        "isopath_xsk_rx_dropped_total{port=\"up0\",queue=\"0\"}",
        "isopath_drops_total{port=\"up0\",reason=\"rx_drop_no_socket\"}",
        "isopath_worker_loops_total{worker=\"0\",core=\"1\"}",
        "isopath_worker_last_loop_timestamp_seconds{worker=\"0\",core=\"1\"}",
        "isopath_flows_capacity{worker=\"0\"}",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            sample(&page, want).is_some(),
            "{want} not on the page:\n{page}"
        );
    }
    // The worker's last loop is recent (its counter moves every few microseconds).
    let last = sample(
        &page,
        "isopath_worker_last_loop_timestamp_seconds{worker=\"0\",core=\"1\"}",
    )
    .unwrap();
    assert!((unix_now() - last).abs() < 5.0, "last loop {last}");

    let prom = Prometheus::start(&lab);
    let up0 = "isopath_port_rx_packets_total{port=\"up0\"}";
    wait_for("a first scrape", Duration::from_secs(20), || {
        (scalar(&lab, "up{job=\"isopath\"}", None) == Some(1.0)).then_some(())
    });
    // While nothing crosses up0, the latest scrape comes to equal the daemon's own count.
    let settled = |what: &str| {
        wait_for(what, Duration::from_secs(20), || {
            let p = d.port("up0");
            let own = p["rx_packets"].as_u64().unwrap() as f64;
            let scraped = scalar(&lab, up0, None)?;
            (scraped == own).then(|| (own, p["xsk"]["rx_dropped"].as_u64().unwrap()))
        })
    };
    let (before, dropped_before) = settled("the scraped count to settle before the run");
    let (_, t0_tx_before) = lab.link_stats(t, "t0");

    let (count, rate) = (160_000u64, 20_000u64);
    let dst = format!("{}:9100", Lab::FAR_IP);
    let rx = lab.udp_recv(lab.ns_far(), &dst, count, 12);
    let t_start = unix_now();
    let sent = lab.udp_send(t, 0, &dst, 18, count, rate);
    let t_end = unix_now();
    // The far receiver is there so that the far host has no reason to answer (an ICMP port
    // unreachable would need t0's address resolved, through up0); what reaches it is not this
    // test's business (a loaded machine can drop at up0's socket, which is counted below).
    let recv = json_out(&rx.wait_output(Duration::from_secs(17)));
    let n = sent["sent"].as_u64().unwrap();
    assert_eq!(n, count, "{sent}");
    assert!(recv["received"].as_u64().unwrap() <= n, "{recv}");
    let (_, t0_tx_after) = lab.link_stats(t, "t0");
    assert_eq!(
        t0_tx_after - t0_tx_before,
        n,
        "t0 sent frames of its own during the run"
    );

    // After two scrape intervals: Prometheus has exactly what the datapath counted, and that
    // is every frame the sender sent but those the kernel dropped at up0's socket (counted).
    std::thread::sleep(Duration::from_secs(2));
    let (after, dropped_after) = settled("the scraped count to settle after the run");
    assert_eq!(
        after - before + (dropped_after - dropped_before) as f64,
        n as f64,
        "scraped up0 rx + the socket's kernel drops = frames sent"
    );
    // The series holds the count before the run at its start, and the count after it now.
    let at_start = scalar(&lab, up0, Some(t_start)).expect("a sample before the run");
    assert_eq!(
        (at_start, after),
        (
            before,
            before + (n - (dropped_after - dropped_before)) as f64
        )
    );

    // rate() over the middle of the run is within 5% of the rate the sender achieved.
    let secs = t_end - t_start;
    assert!(secs > 6.0, "the run lasted {secs} s");
    let sent_rate = n as f64 / sent["elapsed_secs"].as_f64().unwrap();
    let mid = t_start + secs / 2.0;
    let window = (secs - 3.0).floor() as u64;
    let r = scalar(
        &lab,
        &format!("rate({up0}[{window}s])"),
        Some(mid + window as f64 / 2.0),
    )
    .expect("a rate");
    assert!(
        (r - sent_rate).abs() <= 0.05 * sent_rate,
        "rate() {r:.0}/s vs sent {sent_rate:.0}/s over {window} s"
    );
    // The endpoint answered every scrape with a fresh snapshot.
    let (_, page) = curl(&lab, &[&format!("http://{METRICS}/metrics")]);
    assert_eq!(
        sample(&page, "isopath_metrics_stale_pages_total"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, "isopath_metrics_bad_requests_total"),
        Some(0.0),
        "{page}"
    );
    drop(prom);
    drop(d);
}

#[test]
fn a_bad_listen_address_is_refused_at_start_naming_the_field() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("metb");
    let base = lab_config(&lab, "", PORTS);
    // Not an address: a configuration error.
    let out = Isopathd::start_failing(
        &lab,
        &format!("{base}\n[metrics]\nlisten = \"localhost\"\n"),
        &[],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{log}");
    assert!(
        log.contains("metrics.listen: \"localhost\": expected IP:PORT"),
        "{log}"
    );
    // An address of no interface here (TEST-NET-2): the bind fails, before any port changes.
    let out = Isopathd::start_failing(
        &lab,
        &format!("{base}\n[metrics]\nlisten = \"198.51.100.7:9469\"\n"),
        &[],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE), "{log}");
    assert!(
        log.contains("metrics.listen: binding 198.51.100.7:9469: Cannot assign requested address"),
        "{log}"
    );
    let ip = lab.exec(lab.ns_app(), ["ip", "-d", "link", "show", "up0"]);
    assert!(
        !String::from_utf8_lossy(&ip.stdout).contains("prog/xdp"),
        "a program was attached before the bind failed"
    );
    // Unknown keys are refused like everywhere else.
    let out = Isopathd::start_failing(&lab, &format!("{base}\n[metrics]\nport = 9469\n"), &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{log}");
    assert!(log.contains("unknown field `port`"), "{log}");
}
