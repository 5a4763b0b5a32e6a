#!/usr/bin/env bash
# The Python package's checks: `pip install .` into a fresh virtual environment, then its pytest suite
# (python/tests) against the installed package. Run by scripts/test.sh; needs what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${RLM_PYTHON_TEST_VENV:-target/python-test-venv}"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest

# maturin builds into the workspace's target/ like cargo does. The dev profile, not pip's default release build:
# it reuses most of what `cargo test` compiled (a release build of the engine and wasmtime takes far longer).
MATURIN_PEP517_ARGS="--profile dev" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check .

# From the repository root: python/ (the package's sources) is not on sys.path, so the tests import the installed
# package. pytest's "no tests collected" (exit 5) fails this script like any other failure.
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests "$@"
