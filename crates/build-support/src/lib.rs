//! Helpers for build scripts of rlm crates.
//!
//! pyo3 links against the libpython of the Python it found at build time, but the resulting binaries carry no
//! rpath, so at run time the dynamic loader may pick a different libpython (on a machine with pyenv: the system's
//! instead of pyenv's), which fails in confusing ways. `rlm-executor-local` publishes the directory of the right
//! libpython to the build scripts of the crates that depend on it directly (its `links` key makes cargo pass it as
//! `DEP_RLM_PYTHON_LIB_DIR`); [`link_embedded_python`] turns that into an rpath for the calling crate's binaries,
//! tests, examples and benches.

#![allow(clippy::print_stdout, reason = "build scripts talk to cargo through stdout")]

/// Call from `build.rs` of a crate that depends directly on `rlm-executor-local` and builds executables (binaries or
/// integration tests) that embed CPython.
pub fn link_embedded_python() {
    let unix = std::env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|family| family.split(',').any(|f| f == "unix"));
    if let (true, Ok(lib_dir)) = (unix, std::env::var("DEP_RLM_PYTHON_LIB_DIR")) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
