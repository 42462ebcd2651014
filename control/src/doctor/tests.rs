//! Doctor against fixture hosts (tests/fixtures/hosts, written by make-fixtures.py).

use std::path::PathBuf;

use super::*;

fn fixture(name: &str) -> (Root, Target) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hosts")
        .join(name);
    let root = Root::new(&dir);
    let cfg = dir.join("isopath.toml");
    let config = Config::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let target = Target::from_config(&config, cfg.to_str(), &online_cpus(&root));
    (root, target)
}

#[test]
fn print_all() {
    for h in [
        "no-isolation",
        "isolcpus-flags",
        "nohz-full",
        "ixgbe-16q",
        "veth-host",
    ] {
        let (root, target) = fixture(h);
        println!("{}", diagnose(&root, &target).table());
    }
}
