#!/usr/bin/env python3
"""A plaintext gRPC JobService server built only from Google's published
message classes (google.cloud.aiplatform_v1.types, google.longrunning,
google.protobuf). For manual wire-compatibility checks; never a test dependency.

Every call appends one JSON line to --log: method, decoded request, headers.

    .venv/bin/python py_server.py --port 0 --log /tmp/wire.jsonl
"""
import argparse
import datetime
import itertools
import json
import re
import sys
import threading
import time
from concurrent import futures

import grpc
from google.cloud.aiplatform_v1 import types
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2, json_format

SERVICE = "google.cloud.aiplatform.v1.JobService"
OPERATIONS = "google.longrunning.Operations"
JS = types.JobState
TERMINAL = {
    JS.JOB_STATE_SUCCEEDED,
    JS.JOB_STATE_FAILED,
    JS.JOB_STATE_CANCELLED,
    JS.JOB_STATE_EXPIRED,
    JS.JOB_STATE_PARTIALLY_SUCCEEDED,
}
PARENT_RE = re.compile(r"^projects/[^/]+/locations/[^/]+$")
JOB_RE = re.compile(r"^(projects/[^/]+/locations/[^/]+)/batchPredictionJobs/(\d+)$")


class RpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def plus(msg_type):
    """(deserializer, serializer, to_json) for a proto-plus message class."""
    return msg_type.deserialize, msg_type.serialize, lambda m: json.loads(type(m).to_json(m))


def pb(msg_type):
    """(deserializer, serializer, to_json) for a raw protobuf message class."""
    return msg_type.FromString, msg_type.SerializeToString, lambda m: json.loads(json_format.MessageToJson(m))


def pack(msg):
    """Pack a proto-plus or protobuf message into google.protobuf.Any."""
    a = any_pb2.Any()
    a.Pack(type(msg).pb(msg) if hasattr(type(msg), "pb") else msg)
    return a


class Store:
    def __init__(self, delete_done):
        self.lock = threading.Lock()
        self.jobs = {}  # name -> BatchPredictionJob
        self.ops = {}  # name -> (pending Operation, done Operation)
        self.ids = itertools.count(1000000000000000001)
        self.op_ids = itertools.count(7000000000000000001)
        self.delete_done = delete_done

    # --- JobService -------------------------------------------------------
    def create(self, req):
        if not PARENT_RE.match(req.parent):
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"bad parent {req.parent!r}")
        job = types.BatchPredictionJob.deserialize(types.BatchPredictionJob.serialize(req.batch_prediction_job))
        with self.lock:
            job.name = f"{req.parent}/batchPredictionJobs/{next(self.ids)}"
            job.state = JS.JOB_STATE_PENDING
            t = now()
            job.create_time = t
            job.update_time = t
            self.jobs[job.name] = job
            return job

    def _job(self, name):
        job = self.jobs.get(name)
        if job is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"BatchPredictionJob {name!r} not found")
        return job

    def get(self, req):
        with self.lock:
            job = self._job(req.name)
            t = now()
            if job.state == JS.JOB_STATE_PENDING:
                job.state = JS.JOB_STATE_RUNNING
                job.start_time = t
                job.update_time = t
            elif job.state == JS.JOB_STATE_RUNNING:
                job.state = JS.JOB_STATE_SUCCEEDED
                job.end_time = t
                job.update_time = t
                job.completion_stats = types.CompletionStats(
                    successful_count=1, failed_count=0, incomplete_count=0
                )
                stamp = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                out = job.output_config
                if out.gcs_destination.output_uri_prefix:
                    prefix = out.gcs_destination.output_uri_prefix.rstrip("/")
                    job.output_info = types.BatchPredictionJob.OutputInfo(
                        gcs_output_directory=f"{prefix}/prediction-model-{stamp}"
                    )
                elif out.bigquery_destination.output_uri:
                    parts = out.bigquery_destination.output_uri[len("bq://"):].split(".")
                    table = parts[2] if len(parts) > 2 else "predictions_" + re.sub(r"[-:.]", "_", stamp)
                    job.output_info = types.BatchPredictionJob.OutputInfo(
                        bigquery_output_dataset="bq://" + ".".join(parts[:2]),
                        bigquery_output_table=table,
                    )
            return job

    def list(self, req):
        if not PARENT_RE.match(req.parent):
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"bad parent {req.parent!r}")
        want_state = None
        f = req.filter.strip()
        if f:
            m = re.fullmatch(r'state\s*[=:]\s*"?(JOB_STATE_[A-Z_]+)"?', f)
            if not m:
                raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"py_server supports only state=JOB_STATE_X filters, got {f!r}")
            want_state = JS[m.group(1)]
        with self.lock:
            jobs = [
                j for n, j in self.jobs.items()
                if n.startswith(req.parent + "/") and (want_state is None or j.state == want_state)
            ]
        start = int(req.page_token) if req.page_token else 0
        size = req.page_size if req.page_size > 0 else 100
        page = jobs[start:start + size]
        nxt = str(start + size) if start + size < len(jobs) else ""
        return types.ListBatchPredictionJobsResponse(batch_prediction_jobs=page, next_page_token=nxt)

    def cancel(self, req):
        with self.lock:
            job = self._job(req.name)
            if job.state in TERMINAL:
                raise RpcError(grpc.StatusCode.FAILED_PRECONDITION, f"job is already {job.state.name}")
            job.state = JS.JOB_STATE_CANCELLED
            job.end_time = job.update_time = now()
        return empty_pb2.Empty()

    def delete(self, req):
        with self.lock:
            self._job(req.name)
            del self.jobs[req.name]
            loc = JOB_RE.match(req.name).group(1)
            op_name = f"{loc}/operations/{next(self.op_ids)}"
            t = now()
            md = types.DeleteOperationMetadata(
                generic_metadata=types.GenericOperationMetadata(create_time=t, update_time=t)
            )
            pending = operations_pb2.Operation(name=op_name, metadata=pack(md), done=False)
            done = operations_pb2.Operation(name=op_name, metadata=pack(md), done=True, response=pack(empty_pb2.Empty()))
            self.ops[op_name] = done
            return done if self.delete_done else pending

    # --- google.longrunning.Operations ------------------------------------
    def get_operation(self, req):
        with self.lock:
            op = self.ops.get(req.name)
        if op is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"operation {req.name!r} not found")
        return op


def headers(context):
    out = {}
    for k, v in context.invocation_metadata():
        v = v if isinstance(v, str) else v.hex()
        if k in out:
            out[k] = (out[k] if isinstance(out[k], list) else [out[k]]) + [v]
        else:
            out[k] = v
    return out


class Logger:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.f = open(path, "a", buffering=1) if path else None

    def write(self, rec):
        if self.f:
            with self.lock:
                self.f.write(json.dumps(rec, sort_keys=True) + "\n")


class UnknownMethodLogger(grpc.GenericRpcHandler):
    """Logs calls to methods nobody implements (they get UNIMPLEMENTED)."""

    def __init__(self, logger):
        self.logger = logger

    def service(self, details):
        self.logger.write({
            "ts": time.time(), "method": details.method, "request": None,
            "metadata": dict((k, v if isinstance(v, str) else v.hex()) for k, v in details.invocation_metadata),
            "code": "UNIMPLEMENTED",
        })
        return None


def build_handlers(store, logger):
    def wrap(full, fn, req_codec, resp_codec):
        req_de, _, req_json = req_codec
        _, resp_ser, _ = resp_codec

        def handler(request, context):
            rec = {"ts": time.time(), "method": full, "request": req_json(request), "metadata": headers(context)}
            try:
                resp = fn(request)
                rec["code"] = "OK"
                logger.write(rec)
                return resp
            except RpcError as e:
                rec["code"] = e.code.name
                rec["message"] = e.message
                logger.write(rec)
                context.abort(e.code, e.message)

        return grpc.unary_unary_rpc_method_handler(handler, request_deserializer=req_de, response_serializer=resp_ser)

    job = plus(types.BatchPredictionJob)
    empty = pb(empty_pb2.Empty)
    op = pb(operations_pb2.Operation)
    jobs = {
        "CreateBatchPredictionJob": (store.create, plus(types.CreateBatchPredictionJobRequest), job),
        "GetBatchPredictionJob": (store.get, plus(types.GetBatchPredictionJobRequest), job),
        "ListBatchPredictionJobs": (store.list, plus(types.ListBatchPredictionJobsRequest), plus(types.ListBatchPredictionJobsResponse)),
        "CancelBatchPredictionJob": (store.cancel, plus(types.CancelBatchPredictionJobRequest), empty),
        "DeleteBatchPredictionJob": (store.delete, plus(types.DeleteBatchPredictionJobRequest), op),
    }
    ops = {"GetOperation": (store.get_operation, pb(operations_pb2.GetOperationRequest), op)}
    return [
        grpc.method_handlers_generic_handler(
            SERVICE, {m: wrap(f"/{SERVICE}/{m}", *v) for m, v in jobs.items()}),
        grpc.method_handlers_generic_handler(
            OPERATIONS, {m: wrap(f"/{OPERATIONS}/{m}", *v) for m, v in ops.items()}),
        UnknownMethodLogger(logger),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="0 = ephemeral")
    ap.add_argument("--log", default="", help="append one JSON line per call here")
    ap.add_argument("--delete-done", action="store_true",
                    help="Delete returns an already-done Operation (default: not done; done on first GetOperation)")
    args = ap.parse_args()

    store = Store(args.delete_done)
    logger = Logger(args.log)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=build_handlers(store, logger))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"VERTEX_AI_EMULATOR_HOST=127.0.0.1:{port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    sys.exit(main())
