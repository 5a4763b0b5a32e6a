# syntax=docker/dockerfile:1
#
# The inference image: `rlm serve` (HTTP API, OpenAI-compatible front). It holds the model API key (given at run
# time through OPENAI_API_KEY or LLM_API_KEY, never baked in) and runs model-written code in the sandbox service
# named by WASM_SERVICE_URL.
#
# Build from the repository root (the build context must be the whole workspace):
#
#   docker build -f deploy/docker/inference.Dockerfile -t rlm-inference:0.1.0 .
#
# deploy/docker/inference.Dockerfile.dockerignore keeps target/, .git and other local state out of the context.

FROM rust:1.95-bookworm AS builder

# pyo3 links the `rlm` binary against a shared libpython: build against Debian's python3 so the runtime image only
# needs Debian's libpython3.11.
# Debian package versions are not pinned: a stable release only replaces them with security fixes, and pinned
# versions disappear from the archive when it does (the base images are pinned by tag).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY crates crates

ENV PYO3_PYTHON=/usr/bin/python3 \
    CARGO_TERM_COLOR=never
# Every feature but the embedded local model (`local-llm`): images talk to model endpoints, and llama.cpp would
# add cmake, libclang and minutes of compiling to the build.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rlm-cli --no-default-features --features local,wasm,postgres,viewer,server \
    && install -D -m 0755 target/release/rlm /out/rlm \
    && /out/rlm --version


FROM debian:bookworm-slim AS runtime

# libpython3.11: the local executor's CPython (linked by the binary, even when code runs in the sandbox service).
# ca-certificates: TLS to the model endpoint.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpython3.11 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rlm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin rlm

COPY --from=builder /out/rlm /usr/local/bin/rlm

# Nothing is written outside /tmp, so the root filesystem can be mounted read-only (mount a volume at /tmp).
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    RLM_LOG=info

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["rlm", "health", "--timeout", "4", "http://127.0.0.1:8080/health"]

ENTRYPOINT ["rlm"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
