#!/usr/bin/env python3
"""The BigQuery side of `scripts/bench-bigquery.sh`, with Google's Python
client (google-cloud-bigquery): load N prompts from an NDJSON file with
`load_table_from_file`, then read an output table with `list_rows`. Prints
one JSON line of figures (wall and CPU seconds, peak RSS)."""

import json
import os
import resource
import sys
import time

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    endpoint, project, dataset, ndjson, out_table = sys.argv[1:6]
    client = bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )
    table = f"{project}.{dataset}.py_prompts_{int(time.time() * 1000)}"
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        schema=[
            bigquery.SchemaField("key", "STRING"),
            bigquery.SchemaField("request", "JSON"),
        ],
        write_disposition="WRITE_EMPTY",
    )
    t0, c0 = time.perf_counter(), cpu()
    with open(ndjson, "rb") as f:
        client.load_table_from_file(f, table, job_config=config).result()
    t1, c1 = time.perf_counter(), cpu()
    rows = 0
    for row in client.list_rows(f"{project}.{dataset}.{out_table}", page_size=10000):
        json.loads(row["response"]) if isinstance(row["response"], str) else row["response"]
        rows += 1
    t2, c2 = time.perf_counter(), cpu()
    print(json.dumps({
        "client": "python google-cloud-bigquery " + bigquery.__version__,
        "load_wall_s": t1 - t0, "load_cpu_s": c1 - c0,
        "read_wall_s": t2 - t1, "read_cpu_s": c2 - c1, "read_rows": rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
