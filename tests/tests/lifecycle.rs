//! Start, stop, crash and restart: what the daemon leaves on the interfaces, and what it refuses.

use std::{path::PathBuf, process::Command};

use isopath_tests::{
    Lab,
    isopathd::{Isopathd, PORTS, assert_clean_stop, lab_config, xdp_prog},
    require_privileges,
};

const EXIT_CONFIG: i32 = 2;
const EXIT_FAILURE: i32 = 1;

fn no_program_on_datapath_ports(lab: &Lab) {
    for dev in ["up0", "m0"] {
        assert_eq!(
            xdp_prog(lab, lab.ns_app(), dev),
            None,
            "XDP program left on {dev}"
        );
    }
}

/// Attaches an object in netlink (non-link) mode, the way `ip link` does: it survives its
/// loader, as a crashed instance's program would.
fn plant(lab: &Lab, dev: &str, obj: &PathBuf) -> u64 {
    let out = lab.exec(
        lab.ns_app(),
        [
            "ip",
            "link",
            "set",
            "dev",
            dev,
            "xdpdrv",
            "obj",
            obj.to_str().unwrap(),
            "sec",
            "xdp",
        ],
    );
    assert!(
        out.status.success(),
        "planting {obj:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    xdp_prog(lab, lab.ns_app(), dev)
        .expect("planted program is attached")
        .0
}

fn our_object() -> PathBuf {
    let p = std::env::temp_dir().join(format!("isopath-ours-{}.bpf.o", std::process::id()));
    std::fs::write(&p, isopath_datapath::xsk::xdp::object()).unwrap();
    p
}

fn foreign_object() -> PathBuf {
    let src = isopath_tests::repo_root().join("tests/fixtures/xdp_foreign.bpf.c");
    let out = std::env::temp_dir().join(format!("isopath-foreign-{}.bpf.o", std::process::id()));
    let st = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("clang (installed by scripts/test.sh)");
    assert!(st.success(), "compiling {src:?}");
    out
}

#[test]
fn bad_config_is_refused_naming_the_field_before_anything_is_attached() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("cfg");
    let cases = [
        (
            lab_config(&lab, "", PORTS).replace("rx_ring_size = 1024", "rx_ring_size = 1000"),
            "rx_ring_size = 1000",
        ),
        (
            lab_config(&lab, "frame_size = 1024", PORTS),
            "frame_size = 1024",
        ),
        (
            lab_config(&lab, "", &PORTS.replace("m0", "nosuch0")),
            "port[1].name: interface \"nosuch0\" not found",
        ),
        (lab_config(&lab, "burst = 100000", PORTS), "burst = 100000"),
        (
            lab_config(&lab, "colour = \"blue\"", PORTS),
            "unknown field `colour`",
        ),
    ];
    for (config, expect) in cases {
        let out = Isopathd::start_failing(&lab, &config, &[]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{log}");
        assert!(log.contains(expect), "expected {expect:?} in:\n{log}");
        no_program_on_datapath_ports(&lab);
    }
}

#[test]
fn sigterm_and_sigkill_leave_no_program_and_a_restart_forwards() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("kill");
    let config = lab_config(&lab, "", PORTS);

    let d = Isopathd::start(&lab, &config, &[]);
    assert!(xdp_prog(&lab, lab.ns_app(), "up0").is_some_and(|p| p.1 == "isopath_xdp"));
    lab.ping_far();
    assert_clean_stop(&d.stop());
    no_program_on_datapath_ports(&lab);

    // A crash: the BPF links die with the process, so the kernel detaches the programs.
    let d = Isopathd::start(&lab, &config, &[]);
    lab.ping_far();
    d.kill();
    no_program_on_datapath_ports(&lab);

    // The restart finds the dead instance's control socket file and replaces it.
    let d = Isopathd::start(&lab, &config, &[]);
    lab.ping_far();
    assert_clean_stop(&d.stop());
    no_program_on_datapath_ports(&lab);
}

#[test]
fn a_stale_program_of_ours_is_replaced() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("stale");
    let obj = our_object();
    let planted = plant(&lab, "up0", &obj);
    let mut d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &[]);
    let log = d.log();
    assert!(
        log.contains("replaced a stale XDP program of ours"),
        "{log}"
    );
    let now = xdp_prog(&lab, lab.ns_app(), "up0").expect("ours is attached");
    assert_ne!(now.0, planted, "the planted program is still attached");
    assert_eq!(now.1, "isopath_xdp");
    lab.ping_far();
    assert_clean_stop(&d.stop());
    no_program_on_datapath_ports(&lab);
    let _ = std::fs::remove_file(obj);
}

#[test]
fn a_foreign_program_refuses_start_unless_forced() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("forgn");
    let obj = foreign_object();
    let planted = plant(&lab, "m0", &obj);

    let out = Isopathd::start_failing(&lab, &lab_config(&lab, "", PORTS), &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_FAILURE), "{log}");
    assert!(
        log.contains("m0: a foreign XDP program is attached") && log.contains("--force"),
        "{log}"
    );
    // Nothing was changed: the foreign program is still there, up0 got nothing.
    assert_eq!(
        xdp_prog(&lab, lab.ns_app(), "m0").map(|p| p.0),
        Some(planted)
    );
    assert_eq!(xdp_prog(&lab, lab.ns_app(), "up0"), None);

    let mut d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &["--force"]);
    assert!(
        d.log().contains("replaced a foreign XDP program"),
        "{}",
        d.log()
    );
    assert_eq!(
        xdp_prog(&lab, lab.ns_app(), "m0").map(|p| p.1),
        Some("isopath_xdp".into())
    );
    lab.ping_far();
    assert_clean_stop(&d.stop());
    no_program_on_datapath_ports(&lab);
    let _ = std::fs::remove_file(obj);
}

#[test]
fn bad_control_requests_get_an_error_and_a_counter_and_change_nothing() {
    if !require_privileges() {
        return;
    }
    let lab = Lab::up("ctl");
    let d = Isopathd::start(&lab, &lab_config(&lab, "", PORTS), &[]);
    lab.ping_far();
    let before = d.status();
    let sock = isopath_tests::isopathd::socket_path(&lab);
    let bad: [&[u8]; 4] = [b"bogus\n", b"\xff\xfe\n", &[b'a'; 5000], b""];
    let client = isopath_control::client::Client::new(&sock);
    for req in bad {
        let reply = client.raw(req).unwrap();
        assert!(reply.contains("\"error\""), "{req:?} -> {reply:?}");
    }
    let after = d.status();
    assert_eq!(
        after["control"]["bad_requests"].as_u64().unwrap()
            - before["control"]["bad_requests"].as_u64().unwrap(),
        4,
        "{after:#}"
    );
    assert_eq!(after["state"], "running");
    assert_eq!(after["ports"].as_array().unwrap().len(), 2);
    lab.ping_far();
    assert_clean_stop(&d.stop());
}
