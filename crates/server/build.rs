//! Binaries of this crate embed CPython through `rlm-executor-local`: give them an rpath to the libpython that pyo3
//! was configured against (published by that crate's build script), so they do not load a different libpython that
//! the loader happens to find first.

#![allow(clippy::print_stdout, reason = "a build script talks to cargo through stdout")]

fn main() {
    let unix = std::env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|family| family.split(',').any(|f| f == "unix"));
    if let (true, Ok(lib_dir)) = (unix, std::env::var("DEP_RLM_PYTHON_LIB_DIR")) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
