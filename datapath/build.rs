//! Compiles the XDP program with libbpf-cargo's clang driver and leaves the object in OUT_DIR,
//! where `src/xsk/xdp.rs` embeds it with `include_bytes!`.
//!
//! We use libbpf-cargo to build the object but not its generated skeleton: a skeleton borrows its
//! `OpenObject` for its whole life, which does not fit a port that owns its program and is added
//! and removed at run time. libbpf-rs opens the embedded object instead.

//!
//! Without the `xdp` feature (the fuzz targets' build: views and the classify pass only) there
//! is no XDP program to build.

#[cfg(feature = "xdp")]
const SRC: &str = "src/bpf/isopath.bpf.c";

#[cfg(not(feature = "xdp"))]
fn main() {}

#[cfg(feature = "xdp")]
fn main() {
    use std::{env, ffi::OsStr, path::PathBuf};

    use libbpf_cargo::SkeletonBuilder;

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("isopath.bpf.o");
    let skel = out.join("isopath.skel.rs");
    SkeletonBuilder::new()
        .source(SRC)
        .obj(&obj)
        // Debian keeps asm/ headers under the multiarch directory, which clang -target bpf
        // does not search by itself.
        .clang_args([
            OsStr::new("-I/usr/include/x86_64-linux-gnu"),
            OsStr::new("-O2"),
        ])
        .build_and_generate(&skel)
        .unwrap_or_else(|e| panic!("building {SRC}: {e:#}"));
    println!("cargo:rerun-if-changed={SRC}");
}
