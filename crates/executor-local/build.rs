//! Links the crate's own test and example binaries so that they load, at run time, the same libpython that pyo3
//! was configured against (an rpath), and records that Python's `major.minor` for the run-time check.
//!
//! `cargo:rustc-link-arg` applies only to this package's own binaries. A crate that builds an executable linking
//! `rlm-executor-local` needs the rpath in its own `build.rs`: the package declares `links = "rlm_python"`, and
//! publishes the directory as metadata, which direct dependents' build scripts read as `DEP_RLM_PYTHON_LIB_DIR`
//! (see the crate documentation).

#![allow(clippy::print_stdout, reason = "a build script talks to cargo through stdout")]

fn main() {
    let config = pyo3_build_config::get();
    let unix = std::env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|family| family.split(',').any(|f| f == "unix"));
    if let Some(lib_dir) = config.lib_dir() {
        if unix {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
        }
        println!("cargo:lib_dir={lib_dir}");
    }
    if let Some(lib_dir) = config.lib_dir() {
        // Dependents that build executables read this as DEP_RLM_PYTHON_LIB_DIR to set the same rpath.
        println!("cargo:lib_dir={lib_dir}");
    }
    let version = config.version();
    println!("cargo:rustc-env=RLM_PYTHON_BUILD_VERSION={}.{}", version.major, version.minor);
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=PYO3_CONFIG_FILE");
    println!("cargo:rerun-if-changed=build.rs");
}
