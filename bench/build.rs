//! Compiles isopath-bench's own XDP programs (the live-frames source and the XDP_DROP ceiling)
//! with libbpf-cargo's clang driver into OUT_DIR, where `src/bpf.rs` embeds the object. As in
//! `datapath/build.rs`, the generated skeleton is not used.

use std::{env, ffi::OsStr, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/bench.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    SkeletonBuilder::new()
        .source(SRC)
        .obj(out.join("bench.bpf.o"))
        .clang_args([
            OsStr::new("-I/usr/include/x86_64-linux-gnu"),
            OsStr::new("-O2"),
        ])
        .build_and_generate(out.join("bench.skel.rs"))
        .unwrap_or_else(|e| panic!("building {SRC}: {e:#}"));
    println!("cargo:rerun-if-changed={SRC}");
}
