#!/usr/bin/env bash
# Create (idempotently) the Python virtualenv used by the interop tests in tests/py/.
#
#   scripts/pyenv.sh            -> prints the venv's python path on the last line of stdout
#
# Location: ${WCFS_PYENV:-<repo>/.venv}. Packages (pinned below) are installed only
# when one of ZODB, BTrees, ZEO, numpy, maturin, pytest does not import in the venv. Everything except the final path
# goes to stderr, so callers can do:  PY=$(scripts/pyenv.sh | tail -n1)
set -euo pipefail

# Pinned versions (all provide wheels / install on CPython 3.11).
PINS=(
    "ZODB==6.4"
    "BTrees==6.5"
    "ZEO==6.2"
    "persistent==6.9"
    "transaction==5.1"
    "zodbpickle==4.5"
    # the Python package (python/): its arrays, its build, its tests
    "numpy==2.3.5"
    "maturin==1.9.6"
    "pytest==8.4.2"
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
venv="${WCFS_PYENV:-$repo/.venv}"

log() { echo "pyenv: $*" >&2; }

if ! command -v python3 >/dev/null 2>&1; then
    log "python3 not found; install it with:"
    log "    apt-get install -y python3 python3-venv"
    echo "apt-get install -y python3 python3-venv" >&2
    exit 1
fi

py="$venv/bin/python"

if [ ! -x "$py" ]; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        log "python3's venv/ensurepip module is missing; install it with:"
        echo "apt-get install -y python3-venv" >&2
        exit 1
    fi
    log "creating venv at $venv"
    # a half-created venv (e.g. interrupted ensurepip) would otherwise stay broken
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
        log "python3 -m venv failed; install the venv module with:"
        echo "apt-get install -y python3-venv" >&2
        rm -rf "$venv"
        exit 1
    fi
fi

if ! "$py" -c 'import ZODB, BTrees, ZEO, numpy, maturin, pytest' >/dev/null 2>&1; then
    log "installing ${PINS[*]}"
    "$py" -m pip install --disable-pip-version-check --no-input -q "${PINS[@]}" >&2
    "$py" -c 'import ZODB, BTrees, ZEO, numpy, maturin, pytest' >&2
fi

echo "$py"
