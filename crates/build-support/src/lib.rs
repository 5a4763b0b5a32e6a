//! Helpers for build scripts of rlm crates.
//!
//! pyo3 links against the libpython of the Python it found at build time, but the resulting binaries carry no
//! rpath, so at run time the dynamic loader may pick a different libpython (on a machine with pyenv: the system's
//! instead of pyenv's), which fails in confusing ways. [`link_embedded_python`] gives the calling crate's binaries,
//! tests, examples and benches an rpath to the right one.
//!
//! pyo3 tells only the build scripts of crates that depend on it *directly* which Python it uses. So that a crate
//! needs no such dependency just for an rpath, [`python_lib_dir`] finds the directory the way pyo3's build
//! configuration does; `rlm-executor-local`, which does depend on pyo3 directly, checks in its build script that
//! both agree (the build fails if they do not).

#![allow(clippy::print_stdout, reason = "build scripts talk to cargo through stdout")]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Call from `build.rs` of a crate whose executables (binaries, integration tests, benches) embed CPython, directly
/// or through `rlm-executor-local`.
pub fn link_embedded_python() {
    let unix = std::env::var("CARGO_CFG_TARGET_FAMILY").is_ok_and(|family| family.split(',').any(|f| f == "unix"));
    if let (true, Some(lib_dir)) = (unix, python_lib_dir()) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The directory of the libpython pyo3 links against, found as pyo3's build configuration finds it: `lib_dir` of
/// the `PYO3_CONFIG_FILE` when one is given, else `PYO3_CROSS_LIB_DIR`, else `sysconfig`'s `LIBDIR` of the
/// interpreter pyo3 picks (`PYO3_PYTHON`; else the active virtualenv's or conda environment's, unless both are set;
/// else `python`, then `python3`, whichever is a Python 3). `None` when there is none.
pub fn python_lib_dir() -> Option<String> {
    for name in ["PYO3_CONFIG_FILE", "PYO3_CROSS_LIB_DIR", "PYO3_PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "PATH"] {
        println!("cargo:rerun-if-env-changed={name}");
    }
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(file) = var("PYO3_CONFIG_FILE") {
        let text = std::fs::read_to_string(file).ok()?;
        return text.lines().find_map(|line| line.strip_prefix("lib_dir=")).map(str::to_owned);
    }
    if let Some(dir) = var("PYO3_CROSS_LIB_DIR") {
        return dir.into_string().ok();
    }
    let environment_python = |dir: OsString| PathBuf::from(dir).join("bin").join("python");
    let interpreter = match (var("PYO3_PYTHON"), var("VIRTUAL_ENV"), var("CONDA_PREFIX")) {
        (Some(python), _, _) => PathBuf::from(python),
        (None, Some(venv), None) => environment_python(venv),
        (None, None, Some(conda)) => environment_python(conda),
        _ => ["python", "python3"].into_iter().map(PathBuf::from).find(|python| is_python3(python))?,
    };
    let output = Command::new(interpreter)
        .args(["-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"])
        .output()
        .ok()?;
    let lib_dir = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !lib_dir.is_empty()).then_some(lib_dir)
}

fn is_python3(interpreter: &Path) -> bool {
    Command::new(interpreter)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"Python 3") || out.stderr.starts_with(b"Python 3"))
}
