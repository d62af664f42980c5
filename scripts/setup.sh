#!/usr/bin/env bash
# Set up everything the project needs on a fresh machine: the system packages the grading
# sandbox and the browser test need (where we may install them), then .venv with the project and its extras.
set -euo pipefail
cd "$(dirname "$0")/.."

# bubblewrap, util-linux: the grading sandbox; chromium: the JupyterLab browser test (Playwright drives
# this Chromium: never `playwright install`, which downloads its own browser).
APT_PACKAGES="bubblewrap util-linux chromium chromium-driver"
missing=""
for pkg in $APT_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing system packages:$missing"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "setup: please install these system packages (sudo apt-get install$missing); continuing" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10 or newer is needed, got " + sys.version' 
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
