#!/usr/bin/env python3
"""The Python reference reader for the results benchmark (benches/results.rs).

For each line: json.loads, take `key`, `status` and the first candidate's
text, count outcomes, track seen keys. Prints one JSON object with the
figures. Usage: reference_reader.py FILE
"""
import json
import resource
import sys
import time


def main(path):
    start = time.perf_counter()
    seen = set()
    counts = {"succeeded": 0, "failed": 0, "blocked": 0, "duplicates": 0}
    nbytes = 0
    text_bytes = 0
    with open(path, "rb") as f:
        for line in f:
            nbytes += len(line)
            if not line.strip():
                continue
            row = json.loads(line)
            key = row.get("key")
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
            if row.get("status"):
                counts["failed"] += 1
                continue
            candidates = (row.get("response") or {}).get("candidates") or []
            if not candidates:
                counts["blocked"] += 1
                continue
            parts = (candidates[0].get("content") or {}).get("parts") or []
            text = "".join(p.get("text", "") for p in parts)
            text_bytes += len(text)
            counts["succeeded"] += 1
    elapsed = time.perf_counter() - start
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "bytes": nbytes, "peak_rss_kb": rss_kb,
                      "text_bytes": text_bytes, **counts}))


if __name__ == "__main__":
    main(sys.argv[1])
