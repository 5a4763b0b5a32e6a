#!/usr/bin/env bash
# Installs headless Chromium and chromedriver (Debian packages `chromium` and `chromium-driver`), which the
# trajectory viewer's end-to-end tests (crates/viewer/tests/viewer.rs) drive over the WebDriver protocol.
# Safe to run again: it only installs what is missing.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

echo "setup-browser: installing chromium and chromium-driver" >&2
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
