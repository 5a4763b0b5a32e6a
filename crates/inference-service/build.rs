//! Executables of this crate (tests included) embed CPython through `rlm-executor-local`: give them an rpath to the
//! libpython that pyo3 is configured against, so they do not load a different libpython that the loader happens to
//! find first (see `rlm-build-support`).

fn main() {
    rlm_build_support::link_embedded_python();
}
