#!/usr/bin/env bash
# BigQuery data-plane figures, side by side in one run against one
# bqemulator: loading N prompts (NDJSON, a load job) and reading an
# N-row output table, by
#   - vertex-batch (examples/bench_bigquery.rs, release build), reading
#     through tabledata.list and again through the Storage Read API (gRPC),
#   - Google's Python client (google-cloud-bigquery: load_table_from_file,
#     list_rows), installed into .venv/ on first use,
#   - curl (the same REST calls, no parsing: the emulator's own share).
# Usage: scripts/bench-bigquery.sh [N] [REPEATS]   (default 200000, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
REPEATS=${2:-3}
scripts/test.sh --no-run >/dev/null 2>&1 || true   # installs the emulators
VENV=.venv
"$VENV/bin/python" -c 'import google.cloud.bigquery' 2>/dev/null ||
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'google-cloud-bigquery==3.47.0'
cargo build --release --quiet --example bench_bigquery --all-features
BIN=target/release/examples/bench_bigquery
WORK=$(mktemp -d)
trap 'kill $BQ_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT

HOME="$PWD/$VENV/bqemulator-home" "$VENV/bin/bqemulator" start --rest-port 0 --grpc-port 0 \
    --project p --log-format json --log-level info >/dev/null 2>"$WORK/bq.log" &
BQ_PID=$!
for _ in $(seq 100); do
    PORT=$(grep -o '"port": [0-9]*, "event": "rest.listen"' "$WORK/bq.log" | grep -o '[0-9]*' | head -1 || true)
    [ -n "${PORT:-}" ] && break
    sleep 0.2
done
EP="http://127.0.0.1:$PORT"
for _ in $(seq 100); do
    GRPC=$(grep -o '"port": [0-9]*, "event": "grpc.listen"' "$WORK/bq.log" | grep -o '[0-9]*' | head -1 || true)
    [ -n "${GRPC:-}" ] && break
    sleep 0.2
done
curl -s -X POST "$EP/bigquery/v2/projects/p/datasets" -H 'content-type: application/json' \
    -d '{"datasetReference":{"projectId":"p","datasetId":"bench"},"location":"us-central1"}' >/dev/null

"$VENV/bin/python" - "$N" "$WORK" <<'PY'
import json, sys
n, work = int(sys.argv[1]), sys.argv[2]
with open(f"{work}/prompts.jsonl", "w") as p, open(f"{work}/output.jsonl", "w") as o:
    for i in range(n):
        req = {"contents": [{"role": "user", "parts": [{"text": f"Prompt number {i}: write a haiku about rivers."}]}],
               "labels": {"vertex_batch_key": f"k{i}"}}
        p.write(json.dumps({"key": f"k{i}", "request": req}) + "\n")
        resp = {"candidates": [{"content": {"role": "model", "parts": [{"text": f"River {i} runs, cold stones hum, the sea waits."}]},
                                "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 14, "totalTokenCount": 26}}
        o.write(json.dumps({"key": f"k{i}", "request": req, "response": resp, "status": "",
                            "processed_time": "2026-12-01T10:00:01.500Z"}) + "\n")
PY
"$BIN" setup "$EP" p bench "$WORK/output.jsonl" out >/dev/null

for r in $(seq "$REPEATS"); do
    "$BIN" run "$EP" p bench "$WORK/prompts.jsonl" out
    # bqemulator answers a stream in one message, which must stay under its
    # 11 MB limit: 10 streams (its most) for 200,000 rows.
    BENCH_STORAGE_READ_API="http://127.0.0.1:$GRPC" BENCH_READ_STREAMS=10 \
        "$BIN" run "$EP" p bench "$WORK/prompts.jsonl" out
    "$VENV/bin/python" scripts/bench_bq_python.py "$EP" p bench "$WORK/prompts.jsonl" out
    # curl: the same load (one multipart request) and every page, unparsed.
    T0=$(date +%s.%N)
    {
        printf -- '--B\r\nContent-Type: application/json\r\n\r\n'
        printf '{"configuration":{"load":{"destinationTable":{"projectId":"p","datasetId":"bench","tableId":"curl_%s_%s"},"sourceFormat":"NEWLINE_DELIMITED_JSON","schema":{"fields":[{"name":"key","type":"STRING"},{"name":"request","type":"JSON"}]}}}}' "$r" "$$"
        printf -- '\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\n'
        cat "$WORK/prompts.jsonl"
        printf -- '\r\n--B--\r\n'
    } > "$WORK/multipart"
    curl -s -o /dev/null -X POST "$EP/upload/bigquery/v2/projects/p/jobs?uploadType=multipart" \
        -H 'content-type: multipart/related; boundary=B' --data-binary @"$WORK/multipart"
    T1=$(date +%s.%N)
    TOKEN=""
    while :; do
        URL="$EP/bigquery/v2/projects/p/datasets/bench/tables/out/data?maxResults=10000"
        [ -n "$TOKEN" ] && URL="$URL&pageToken=$TOKEN"
        TOKEN=$(curl -s "$URL" | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin).get("pageToken") or "")')
        [ -z "$TOKEN" ] && break
    done
    T2=$(date +%s.%N)
    echo "{\"client\": \"curl\", \"load_wall_s\": $(echo "$T1 - $T0" | bc), \"read_wall_s\": $(echo "$T2 - $T1" | bc)}"
done
