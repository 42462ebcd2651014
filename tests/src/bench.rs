//! Running isopath-bench's lab runs from a test: `compare`, `rfc2544` and `failover` build
//! their own lab, print one report as JSON and remove the lab when they end.

use serde_json::Value;

/// Runs `isopath-bench SUBCOMMAND ARGS -q --json` (a run that builds its own lab, prefix `tag` +
/// this process's id); returns the report and its `--out` directory.
///
/// # Panics
/// If the run fails, prints no JSON or leaves its lab behind.
pub fn run_on_lab(subcommand: &str, tag: &str, args: &[&str]) -> (Value, std::path::PathBuf) {
    let out_dir = std::env::temp_dir().join(format!("isopath-bench-{tag}-{}", std::process::id()));
    let prefix = format!("{tag}{}", std::process::id() % 100_000);
    let out = std::process::Command::new(crate::bin("isopath-bench"))
        .arg(subcommand)
        .args(args)
        .args(["-q", "--json", "--prefix", &prefix, "--out"])
        .arg(&out_dir)
        .output()
        .unwrap_or_else(|e| panic!("running isopath-bench {subcommand}: {e}"));
    let _ = std::process::Command::new(crate::lab_script())
        .args(["down", &prefix])
        .output();
    assert!(
        out.status.success(),
        "isopath-bench {subcommand} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = crate::json_out(&out);
    assert!(
        crate::netns_list().iter().all(|n| !n.starts_with(&prefix)),
        "lab left behind"
    );
    (r, out_dir)
}

/// The record of peer `name` in a compare report.
///
/// # Panics
/// If the report has none.
pub fn peer<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["peer"] == name))
        .unwrap_or_else(|| panic!("no peer {name} in {r}"))
}
