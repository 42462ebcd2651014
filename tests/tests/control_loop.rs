//! The control loop on the lab: what a control client can and cannot hold up.

use std::{
    os::unix::net::UnixStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use isopath_tests::{
    Lab,
    isopathd::{Isopathd, assert_clean_stop, bond_config, port_of, socket_path, u},
    require_privileges,
};
use serde_json::Value;

/// Frames sent by the bond's members: on an idle lab, the ARP monitor's probes.
fn member_tx(s: &Value) -> u64 {
    u(port_of(s, "m0"), "tx_packets") + u(port_of(s, "m1"), "tx_packets")
}

/// Probes per second over `window`, from two status reads.
fn probe_rate(d: &Isopathd, window: Duration) -> f64 {
    let (a, t) = (d.status(), Instant::now());
    std::thread::sleep(window);
    let b = d.status();
    (member_tx(&b) - member_tx(&a)) as f64 / t.elapsed().as_secs_f64()
}

/// A client that connects and sends nothing delays nothing: while four such clients stay
/// connected (each replaced after 300 ms, longer than the daemon's read timeout), the ARP
/// monitor keeps its period (probes at the rate measured without them) and a status request
/// is answered at once. A control loop that waited for each client's line (200 ms each) sent
/// almost no probe then.
#[test]
fn silent_control_clients_do_not_delay_the_arp_monitor() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("bsil");
    let opts = "addresses = [\"198.18.0.10\"]\narp_interval = 20\narp_ip_target = [\"198.18.0.2\"]";
    let d = Isopathd::start(&lab, &bond_config(&lab, "", opts), &[]);
    d.wait_for("an active member", Duration::from_secs(5), |s| {
        s["bonds"][0]["active"].is_string()
    });
    // Start-up's peer notifications are over after a moment.
    std::thread::sleep(Duration::from_millis(300));
    let alone = probe_rate(&d, Duration::from_secs(1));
    // One target, one probe per 20 ms interval, as the loop's turns allow.
    assert!(alone > 20.0, "the ARP monitor probes: {alone:.1}/s");

    let stop = Arc::new(AtomicBool::new(false));
    let sock = socket_path(&lab);
    let holders = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut opened = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let held: Vec<UnixStream> = (0..4)
                    .filter_map(|_| UnixStream::connect(&sock).ok())
                    .collect();
                opened += held.len() as u32;
                std::thread::sleep(Duration::from_millis(300));
                drop(held);
            }
            opened
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let s = d.status();
    let answered = t.elapsed();
    let crowded = probe_rate(&d, Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let opened = holders.join().unwrap();
    assert!(opened >= 16, "silent clients connected: {opened}");
    assert!(
        answered < Duration::from_millis(100),
        "status took {answered:?} with silent clients connected"
    );
    assert!(
        crowded >= 0.8 * alone,
        "probes with silent clients {crowded:.1}/s, without {alone:.1}/s"
    );
    eprintln!(
        "ARP probes: {alone:.1}/s alone, {crowded:.1}/s with 4 silent clients; status in {answered:?}"
    );
    // The silent clients were answered (late) and counted as bad requests.
    let after = d.status();
    assert!(
        u(&after, "control.bad_requests") >= u(&s, "control.bad_requests") + 8,
        "{}",
        after["control"]
    );
    assert_clean_stop(&d.stop());
}
