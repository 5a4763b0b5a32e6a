#!/usr/bin/env bash
# Sets up a fresh machine if needed, then runs every check CI runs: formatting, lints, and all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-browser.sh    # headless Chromium + chromedriver for the viewer's end-to-end tests
scripts/setup-postgres.sh   # PostgreSQL 15 and TimescaleDB (PGlite) for the trace-store tests
scripts/check-deploy.sh     # Dockerfiles and Kubernetes manifests: kubernetes-validate, checkov, hadolint
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
scripts/test-python.sh      # the Python package: pip install . into a fresh venv, then pytest
