//! Compiles the C++ shim over dlib (src/extract/shim.cpp) and links Debian's libdlib, when the
//! `detect` feature is on (the default). Without it there is nothing to build: the crate then
//! has no face detection and needs neither dlib nor a C++ compiler for it.

use std::process::exit;

const SHIM_SOURCE: &str = "src/extract/shim.cpp";
const SHIM_HEADER: &str = "src/extract/shim.h";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={SHIM_SOURCE}");
    println!("cargo:rerun-if-changed={SHIM_HEADER}");
    if std::env::var_os("CARGO_FEATURE_DETECT").is_none() {
        return;
    }

    // Include paths first, without emitting link flags: the static shim must come before
    // libdlib on the link line (the linker drops an as-needed library nothing yet refers to).
    let dlib = match pkg_config::Config::new().cargo_metadata(false).probe("dlib-1") {
        Ok(lib) => lib,
        Err(e) => missing_dlib(&e),
    };

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .file(SHIM_SOURCE)
        // Always optimized: dlib's CNN at -O0 is tens of times slower, too slow even for tests.
        .opt_level(2)
        // dlib's headers warn by the hundred (in templates instantiated here) under -Wall.
        .warnings(false)
        .extra_warnings(false)
        .flag("-w")
        // Line tables only: full debug info of dlib's templates is ~60 MB and doubles the
        // compile time, for little use (libdlib itself has none).
        .debug(false);
    if std::env::var("DEBUG").is_ok_and(|d| d != "false" && d != "0" && d != "none") {
        build.flag("-g1");
    }
    for dir in &dlib.include_paths {
        build.include(dir);
    }
    for (name, value) in &dlib.defines {
        build.define(name, value.as_deref());
    }
    build.compile("facedb_dlib_shim");

    // Now the link flags of libdlib and what it needs (BLAS, LAPACK, libpng, ...).
    if let Err(e) = pkg_config::Config::new().probe("dlib-1") {
        missing_dlib(&e);
    }
}

fn missing_dlib(e: &pkg_config::Error) -> ! {
    eprintln!(
        "error: dlib (pkg-config package dlib-1) was not found. facedb's face extraction needs \
         Debian's libdlib-dev, libopenblas-dev and liblapack-dev: run tools/setup.sh, which installs them \
         (or build without face detection: --no-default-features).\n\
         \n\
         pkg-config said: {e}"
    );
    exit(1);
}
