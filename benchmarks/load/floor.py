"""The floor: a bare grpcio MatchService with a Python dict lookup, no auth, no logs.

What Python gRPC allows on this machine; the load generator measures hashmatch against it
in the same run. It answers the same requests as hashmatch would for the same list: the
verdict and, for a listed hash, one Reference with the list name, the entry's reference
ID and a list version, so a response of the floor costs what one of hashmatch costs to
build, send and read. `start(port, workers, listed)` runs `workers` processes on one port.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Iterator, Mapping
from concurrent import futures
from typing import Any

import grpc

from hashmatch.v1 import match_pb2

SERVICE = "hashmatch.v1.MatchService"
LIST_NAME = "bench"
LIST_VERSION = 1


def _handlers(listed: Mapping[bytes, str], list_name: str) -> grpc.GenericRpcHandler:
    def one(request: match_pb2.MatchRequest) -> match_pb2.MatchResponse:
        refs: list[str] = []
        for h in request.hashes:
            ref = listed.get(h.value)
            if ref is not None and ref not in refs:
                refs.append(ref)
        if not refs:
            return match_pb2.MatchResponse(
                item_id=request.item_id, verdict=match_pb2.VERDICT_NO_MATCH
            )
        return match_pb2.MatchResponse(
            item_id=request.item_id,
            verdict=match_pb2.VERDICT_MATCH,
            references=[
                match_pb2.Reference(list=list_name, reference_id=r, list_version=LIST_VERSION)
                for r in refs
            ],
        )

    def match(request: match_pb2.MatchRequest, _ctx: grpc.ServicerContext) -> object:
        return one(request)

    def batch(request: match_pb2.MatchBatchRequest, _ctx: grpc.ServicerContext) -> object:
        return match_pb2.MatchBatchResponse(results=[one(r) for r in request.items])

    def stream(
        requests: Iterator[match_pb2.MatchRequest], _ctx: grpc.ServicerContext
    ) -> Iterator[match_pb2.MatchResponse]:
        for request in requests:
            yield one(request)

    def batch_stream(
        requests: Iterator[match_pb2.MatchBatchRequest], _ctx: grpc.ServicerContext
    ) -> Iterator[match_pb2.MatchBatchResponse]:
        for request in requests:
            yield match_pb2.MatchBatchResponse(results=[one(r) for r in request.items])

    ser = match_pb2.MatchResponse.SerializeToString
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Match": grpc.unary_unary_rpc_method_handler(
                match, match_pb2.MatchRequest.FromString, ser
            ),
            "MatchBatch": grpc.unary_unary_rpc_method_handler(
                batch,
                match_pb2.MatchBatchRequest.FromString,
                match_pb2.MatchBatchResponse.SerializeToString,
            ),
            "MatchStream": grpc.stream_stream_rpc_method_handler(
                stream, match_pb2.MatchRequest.FromString, ser
            ),
            "MatchBatchStream": grpc.stream_stream_rpc_method_handler(
                batch_stream,
                match_pb2.MatchBatchRequest.FromString,
                match_pb2.MatchBatchResponse.SerializeToString,
            ),
        },
    )


def _worker(
    port: int, listed: Mapping[bytes, str], list_name: str, threads: int, ready: Any
) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads),
        options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 64 << 20)],
    )
    server.add_generic_rpc_handlers([_handlers(listed, list_name)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.put(port)
    stop.wait()
    server.stop(0).wait()


def start(
    port: int,
    workers: int,
    listed: Mapping[bytes, str],
    list_name: str = LIST_NAME,
    threads: int = 16,
) -> list[multiprocessing.process.BaseProcess]:
    """listed: raw hash -> reference ID, as the list hashmatch serves holds them."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    table = dict(listed)
    procs: list[multiprocessing.process.BaseProcess] = [
        ctx.Process(target=_worker, args=(port, table, list_name, threads, ready), daemon=True)
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    return procs
