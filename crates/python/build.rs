//! The crate's own test binaries embed CPython (pyo3 links libpython when it is not building an extension module):
//! give them the rpath every embedding crate here gets. When maturin builds the extension module
//! (`PYO3_BUILD_EXTENSION_MODULE`), nothing links libpython (the host interpreter provides it), so no rpath either:
//! it would only carry the build machine's path into the wheel.

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_BUILD_EXTENSION_MODULE");
    if std::env::var_os("PYO3_BUILD_EXTENSION_MODULE").is_none() {
        rlm_build_support::link_embedded_python();
    }
}
