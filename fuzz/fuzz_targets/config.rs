//! Any bytes as a config file: parsing and validation must answer with a value or an error,
//! never panic. Run: `cargo +nightly fuzz run config` (cargo-fuzz).
#![no_main]

use isopath_control::{config::Config, host::FakeHost};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::parse(text) {
        let host = FakeHost::new(2, &[("up0", 2), ("m0", 2), ("m1", 2)]);
        let _ = cfg.plan(&host);
    }
});
