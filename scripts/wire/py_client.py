#!/usr/bin/env python3
"""Exercise a JobService endpoint with Google's official Python client
(google-cloud-aiplatform's aiplatform_v1.JobServiceClient) over plaintext gRPC.

Prints `OK <step> ...` or `FAIL <step> <error>` per step; exits 1 on any FAIL.

    .venv/bin/python py_client.py --host 127.0.0.1:PORT [--wait]
"""
import argparse
import sys
import time

import grpc
from google.api_core import exceptions
from google.cloud import aiplatform_v1
from google.cloud.aiplatform_v1.services.job_service.transports import JobServiceGrpcTransport

JS = aiplatform_v1.JobState
TERMINAL = {
    JS.JOB_STATE_SUCCEEDED, JS.JOB_STATE_FAILED, JS.JOB_STATE_CANCELLED,
    JS.JOB_STATE_EXPIRED, JS.JOB_STATE_PARTIALLY_SUCCEEDED,
}
MODEL = "publishers/google/models/gemini-2.0-flash-001"

failures = 0


def step(name, fn):
    """Run fn(); it returns a detail string or raises. Returns (ok, value)."""
    global failures
    try:
        detail, value = fn()
        print(f"OK {name} {detail}", flush=True)
        return value
    except Exception as e:  # noqa: BLE001 - report everything
        failures += 1
        print(f"FAIL {name} {type(e).__name__}: {e}".replace("\n", " "), flush=True)
        return None


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True, help="127.0.0.1:PORT (plaintext)")
    ap.add_argument("--project", default="local-project")
    ap.add_argument("--location", default="us-central1")
    ap.add_argument("--input", default="gs://vertex-batch-demo/input/prompts.jsonl")
    ap.add_argument("--output", default="gs://vertex-batch-demo/output")
    ap.add_argument("--wait", action="store_true", help="poll get until the first job is terminal (max 60 s)")
    args = ap.parse_args()

    parent = f"projects/{args.project}/locations/{args.location}"
    client = aiplatform_v1.JobServiceClient(
        transport=JobServiceGrpcTransport(channel=grpc.insecure_channel(args.host)))

    def new_job(display_name):
        return aiplatform_v1.BatchPredictionJob(
            display_name=display_name,
            model=MODEL,
            input_config=aiplatform_v1.BatchPredictionJob.InputConfig(
                instances_format="jsonl",
                gcs_source=aiplatform_v1.GcsSource(uris=[args.input])),
            output_config=aiplatform_v1.BatchPredictionJob.OutputConfig(
                predictions_format="jsonl",
                gcs_destination=aiplatform_v1.GcsDestination(output_uri_prefix=args.output)),
            model_parameters={"temperature": 0.2, "maxOutputTokens": 200},
            labels={"tool": "wire-py", "team": "vertex-batch"},
        )

    # 1. create
    def create():
        job = client.create_batch_prediction_job(parent=parent, batch_prediction_job=new_job("wire-py"))
        check(job.name.startswith(parent + "/batchPredictionJobs/"), f"name {job.name!r}")
        check(job.name.rsplit("/", 1)[1].isdigit(), f"non-numeric id in {job.name!r}")
        check(job.display_name == "wire-py", f"display_name {job.display_name!r}")
        check(job.model == MODEL, f"model {job.model!r}")
        check(dict(job.labels) == {"tool": "wire-py", "team": "vertex-batch"}, f"labels {dict(job.labels)}")
        check(list(job.input_config.gcs_source.uris) == [args.input], "input uris not echoed")
        check(job.output_config.gcs_destination.output_uri_prefix == args.output, "output prefix not echoed")
        mp = dict(job.model_parameters)
        check(mp.get("temperature") == 0.2 and mp.get("maxOutputTokens") == 200, f"model_parameters {mp}")
        check(job.create_time is not None and job.create_time.year > 2000, "create_time unset")
        return f"name={job.name} state={job.state.name}", job

    job = step("create", create)
    if job is None:
        print("FAIL abort create failed; nothing else to do", flush=True)
        return 1
    name = job.name

    # 2. get
    def get():
        j = client.get_batch_prediction_job(name=name)
        check(j.name == name, f"got {j.name!r}")
        return f"state={j.state.name}", j

    step("get", get)

    # 2b. wait until terminal
    if args.wait:
        def wait():
            deadline = time.monotonic() + 60
            while True:
                j = client.get_batch_prediction_job(name=name)
                if j.state in TERMINAL:
                    extra = ""
                    if j.output_info.gcs_output_directory:
                        extra = f" output={j.output_info.gcs_output_directory}"
                    cs = j.completion_stats
                    extra += f" stats={cs.successful_count}/{cs.failed_count}/{cs.incomplete_count}"
                    if j.error.message:
                        extra += f" error={j.error.message!r}"
                    return f"state={j.state.name}{extra}", j
                if time.monotonic() > deadline:
                    raise TimeoutError(f"still {j.state.name} after 60 s")
                time.sleep(1)

        step("wait", wait)

    # 3. list: one page of 2, then everything
    def list_page():
        pager = client.list_batch_prediction_jobs(
            request=aiplatform_v1.ListBatchPredictionJobsRequest(parent=parent, page_size=2))
        first = next(iter(pager.pages))
        n = len(first.batch_prediction_jobs)
        check(n <= 2, f"page_size=2 returned {n}")
        return f"first_page={n} next_page_token={first.next_page_token!r}", None

    step("list_page", list_page)

    def list_all():
        names = [j.name for j in client.list_batch_prediction_jobs(
            request=aiplatform_v1.ListBatchPredictionJobsRequest(parent=parent, page_size=2))]
        check(name in names, f"{name} missing from list")
        check(len(names) == len(set(names)), "duplicate names across pages")
        return f"total={len(names)}", None

    step("list_all", list_all)

    def list_filter():
        jobs = list(client.list_batch_prediction_jobs(
            request=aiplatform_v1.ListBatchPredictionJobsRequest(parent=parent, filter="state=JOB_STATE_SUCCEEDED")))
        bad = [j.name for j in jobs if j.state != JS.JOB_STATE_SUCCEEDED]
        check(not bad, f"non-SUCCEEDED jobs returned: {bad}")
        return f"succeeded={len(jobs)} includes_first={name in [j.name for j in jobs]}", None

    step("list_filter", list_filter)

    # 4. cancel a second job, created for the purpose
    def cancel():
        j2 = client.create_batch_prediction_job(parent=parent, batch_prediction_job=new_job("wire-py-cancel"))
        client.cancel_batch_prediction_job(name=j2.name)
        after = client.get_batch_prediction_job(name=j2.name)
        check(after.state in (JS.JOB_STATE_CANCELLING, JS.JOB_STATE_CANCELLED),
              f"state after cancel {after.state.name}")
        return f"name={j2.name} state={after.state.name}", None

    step("cancel", cancel)

    # 5. delete the first job (an LRO)
    def delete():
        op = client.delete_batch_prediction_job(name=name)
        op.result(timeout=30)
        md = op.metadata
        try:
            client.get_batch_prediction_job(name=name)
            raise AssertionError("job still there after delete")
        except exceptions.NotFound:
            pass
        return (f"operation={op.operation.name} done={op.done()} "
                f"metadata={type(md).__name__ if md is not None else None}"), None

    step("delete", delete)

    # 6. unknown id -> NOT_FOUND
    def get_unknown():
        bogus = f"{parent}/batchPredictionJobs/999999999999999999"
        try:
            client.get_batch_prediction_job(name=bogus)
        except exceptions.NotFound as e:
            return f"NOT_FOUND {e.message!r}", None
        raise AssertionError("expected NOT_FOUND, got a job")

    step("get_unknown", get_unknown)

    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
