#!/usr/bin/env python3
"""bqemulator with one request at a time: what the tests start.

bqemulator keeps a single DuckDB connection for everything, and DuckDB's
Python connection is not safe to use from two threads. Yet its synchronous
REST handlers (tables.get, tabledata.list, …) run in FastAPI's thread pool
and its Storage Read API's CreateReadSession in gRPC's, while load jobs and
table inserts run on the event loop: a read that lands while a load runs
can get another statement's result (a table without the rows asked for, a
"table not found"). A real BigQuery has no such race, and the tests run
several processes against one emulator at once, so this launcher makes the
emulator take one request at a time: every HTTP request, and every
CreateReadSession, holds one lock for its whole handling. ReadRows streams
what its session already fetched and takes no lock.

Usage: the same arguments as `bqemulator` (scripts/test.sh points
BQEMULATOR_BIN at a wrapper that runs this with the venv's Python).
"""

import asyncio
import sys

import grpc

import bqemulator.server as server
from bqemulator.cli import main
from bqemulator.grpc_api import read_servicer

_lock = None


def one_at_a_time() -> asyncio.Lock:
    """The emulator's one lock (made on its event loop, at first use)."""
    global _lock
    if _lock is None:
        _lock = asyncio.Lock()
    return _lock


_create_app = server.create_app


def create_app(context):
    app = _create_app(context)

    @app.middleware("http")
    async def serial(request, call_next):
        async with one_at_a_time():
            return await call_next(request)

    return app


server.create_app = create_app

_service = read_servicer.BigQueryReadHandler.service


def service(self, details):
    handler = _service(self, details)
    if handler is None or details.method != read_servicer._CREATE_READ_SESSION:
        return handler
    create = handler.unary_unary

    async def serial(request, context):
        async with one_at_a_time():
            return create(request, context)

    return grpc.unary_unary_rpc_method_handler(
        serial,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


read_servicer.BigQueryReadHandler.service = service

if __name__ == "__main__":
    sys.argv[0] = "bqemulator"
    sys.exit(main())
