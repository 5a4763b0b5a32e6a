#!/usr/bin/env bash
# Checks of the workspace's shape that no compiler makes (part of scripts/test.sh; fast, no build):
#  - no crate declares a dependency it does not use (cargo-machete, installed by scripts/setup.sh);
#  - the sandbox binary (rlm-sandbox, crates/sandbox-cli) links no model client, HTTP client, embedded CPython,
#    database driver or engine, so it cannot hold or use a model key;
#  - environment variables are read only at the edges: the CLIs, the Python front, and files named env.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
failed=0

cargo machete

forbidden='^(rlm-models|rlm-models-llama|rlm-engine|rlm-executor-local|rlm-executor-remote|reqwest|pyo3|sqlx|llama-cpp-2) '
# A failing `cargo tree` must fail the check, not pass as an empty tree.
tree=$(cargo tree --locked -p rlm-sandbox-cli -e normal,build --prefix none)
if ! grep -q '^rlm-sandbox-cli ' <<<"$tree"; then
    echo "check-architecture: cargo tree did not list the sandbox binary's crate" >&2
    exit 1
fi
linked=$(sort -u <<<"$tree" | grep -E "$forbidden" || true)
if [ -n "$linked" ]; then
    echo "check-architecture: the sandbox binary must not link these:" >&2
    echo "$linked" >&2
    failed=1
fi

# crates/build-support reads what cargo passes to build scripts; crates/test-support is test scaffolding.
reads=$(grep -rnE 'std::env::var|env::var_os|env::vars' crates/*/src --include='*.rs' \
    | grep -vE '^crates/(cli|sandbox-cli|python|build-support|test-support)/|/env\.rs:|^[^:]+:[0-9]+: *//' || true)
if [ -n "$reads" ]; then
    echo "check-architecture: environment variables read outside the edges (move them to the CLI or an env.rs):" >&2
    echo "$reads" >&2
    failed=1
fi

if [ "$failed" -ne 0 ]; then exit 1; fi
echo "check-architecture: ok"
