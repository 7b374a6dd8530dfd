#!/usr/bin/env bash
# The Python virtual environment the end-to-end tests start the official Python SDK's MCP
# server from (tests/python/govern_server.py, run by tests/tests/govern.rs): .venv/interop,
# made from interop/requirements.lock (the same `mcp` 2.x the interop clients use; its server
# side comes with it). interop/run.sh makes and reuses the same one. A second run does nothing.
#
#   tests/python/venv.sh        # needs python3 3.10+
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$ROOT/.venv/interop"
PY="$VENV/bin/python"
LOCK="$ROOT/interop/requirements.lock"

stamp=$(sha256sum "$LOCK" | sha256sum | cut -d' ' -f1)
if [ -x "$PY" ] && [ "$(cat "$VENV/.interop-stamp" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi
echo "== installing the Python MCP SDK into .venv/interop"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "python3 is older than 3.10" >&2
    exit 1
}
python3 -m venv "$VENV"
timeout 600 "$PY" -m pip install --quiet --disable-pip-version-check -r "$LOCK"
echo "$stamp" >"$VENV/.interop-stamp"
