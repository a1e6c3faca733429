#!/usr/bin/env bash
# Create or refresh the project-local Python virtualenv (.venv at the repo root).
#
# Idempotent and quiet: the requirements are (re)installed only when
# infra/requirements.txt differs from the copy recorded at the last successful
# install (.venv/.requirements.sha256). Output is shown only on failure.
#
# Usage: infra/venv.sh            (PYTHON=python3.12 infra/venv.sh to pick an interpreter)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
req="$root/infra/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

fail() { echo "venv.sh: $*" >&2; exit 1; }

command -v "$python" >/dev/null 2>&1 || fail "$python not found; install Python 3.9+ (with the venv module)"
[ -f "$req" ] || fail "missing $req"

want="$( (command -v sha256sum >/dev/null && sha256sum "$req" || shasum -a 256 "$req") | cut -d' ' -f1)"

# Fast path: nothing to do.
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi

mkdir -p "$venv"
# Serialise concurrent callers (e.g. `make dev` and `make test` started together).
if command -v flock >/dev/null 2>&1; then
    exec 9<"$venv"   # lock the directory itself: `venv --clear` keeps it
    flock 9
    # Another caller may have finished the job while we waited.
    if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        exit 0
    fi
fi

log="$(mktemp "${TMPDIR:-/tmp}/conduit-venv.XXXXXX.log")"
trap 'rm -f "$log"' EXIT

# A venv whose interpreter is gone or broken (e.g. Python upgraded) is rebuilt.
if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -f "$stamp"
    if ! "$python" -m venv --clear "$venv" >"$log" 2>&1; then
        cat "$log" >&2
        fail "could not create $venv with $python (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
fi

rm -f "$stamp"
if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
        -r "$req" >"$log" 2>&1; then
    cat "$log" >&2
    fail "pip install -r infra/requirements.txt failed (see output above)"
fi
echo "$want" >"$stamp"
