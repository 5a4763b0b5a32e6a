//! Links the crate's own test and example binaries so that they load, at run time, the same libpython that pyo3
//! was configured against (an rpath), and records that Python's `major.minor` for the run-time check.
//!
//! `cargo:rustc-link-arg` applies only to this package's own binaries. A crate that builds an executable linking
//! `rlm-executor-local` needs the rpath in its own `build.rs`, which `rlm-build-support` gives it without a direct
//! dependency on pyo3. That finds the directory on its own; this script, which sees pyo3's configuration, checks
//! that both agree.

#![allow(clippy::print_stdout, reason = "a build script talks to cargo through stdout")]

fn main() {
    let config = pyo3_build_config::get();
    let unix = std::env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|family| family.split(',').any(|f| f == "unix"));
    if let (true, Some(lib_dir)) = (unix, config.lib_dir()) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    let found = rlm_build_support::python_lib_dir();
    assert!(
        !unix || found.as_deref() == config.lib_dir(),
        "rlm-build-support finds the libpython directory {found:?}, but pyo3 uses {:?}: the rpath of the crates that \
         embed CPython would be wrong; make rlm_build_support::python_lib_dir follow pyo3's lookup",
        config.lib_dir()
    );
    let version = config.version();
    println!("cargo:rustc-env=RLM_PYTHON_BUILD_VERSION={}.{}", version.major, version.minor);
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=PYO3_CONFIG_FILE");
    println!("cargo:rerun-if-changed=build.rs");
}
