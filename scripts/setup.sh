#!/usr/bin/env bash
# Installs what building, running and testing rlm needs on a Debian/Ubuntu machine with a Rust toolchain.
# Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install Rust (https://rustup.rs) and run this again." >&2
    exit 1
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

# The local executor embeds the CPython that `python3` names; pyo3 needs its headers and shared library.
has_python_headers() {
    python3 - <<'PY' 2>/dev/null
import os, sys, sysconfig
include = sysconfig.get_paths()["include"]
sys.exit(0 if os.path.exists(os.path.join(include, "Python.h")) and sysconfig.get_config_var("Py_ENABLE_SHARED") else 1)
PY
}
# pip fetches the pinned WebAssembly CPython below; venv makes throwaway environments for tests and checks.
need=()
if ! command -v python3 >/dev/null 2>&1 || ! has_python_headers; then need+=(python3 python3-dev); fi
if ! python3 -m pip --version >/dev/null 2>&1; then need+=(python3-pip); fi
if ! python3 -m venv --help >/dev/null 2>&1; then need+=(python3-venv); fi
# The local model (crates/models-llama) compiles llama.cpp from source: cmake drives it, bindgen needs libclang.
if ! command -v cmake >/dev/null 2>&1; then need+=(cmake); fi
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1; then need+=(libclang-dev); fi
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The WebAssembly executor's CPython, pinned by sha256 (see docs/security.md).
if [ -x scripts/fetch-python-wasm.sh ]; then
    scripts/fetch-python-wasm.sh
fi

# Finds dependencies a crate declares but does not use (scripts/test.sh). Built from source once per machine:
# about 2 minutes of one core. (cargo-shear needs a newer rustc than the project's.)
if ! command -v cargo-machete >/dev/null 2>&1 || [ "$(cargo machete --version 2>/dev/null)" != "0.9.2" ]; then
    echo "setup: installing cargo-machete 0.9.2" >&2
    cargo install cargo-machete --version 0.9.2 --locked --quiet
fi
