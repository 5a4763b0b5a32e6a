//! Binaries of this crate embed CPython through `rlm-executor-local`: give them an rpath to the libpython that pyo3
//! was configured against (published by that crate's build script), so they do not load a different libpython that
//! the loader happens to find first.

fn main() {
    rlm_build_support::link_embedded_python();
}
