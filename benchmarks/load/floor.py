"""The floor: a bare grpcio MatchService with a Python set lookup, no auth, no logs.

What Python gRPC allows on this machine; the load generator measures hashmatch against it
in the same run. `serve(port, workers)` runs `workers` processes on one port.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc

from hashmatch.v1 import match_pb2

SERVICE = "hashmatch.v1.MatchService"


def _handlers(listed: frozenset[bytes]) -> grpc.GenericRpcHandler:
    def one(request: match_pb2.MatchRequest) -> match_pb2.MatchResponse:
        hit = any(h.value in listed for h in request.hashes)
        return match_pb2.MatchResponse(
            item_id=request.item_id,
            verdict=match_pb2.VERDICT_MATCH if hit else match_pb2.VERDICT_NO_MATCH,
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
        },
    )


def _worker(port: int, listed: frozenset[bytes], threads: int, ready: object) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads),
        options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 64 << 20)],
    )
    server.add_generic_rpc_handlers([_handlers(listed)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.put(port)  # type: ignore[attr-defined]
    stop.wait()
    server.stop(0).wait()


def start(
    port: int, workers: int, listed: frozenset[bytes], threads: int = 16
) -> list[multiprocessing.process.BaseProcess]:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(port, listed, threads, ready), daemon=True)
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    return procs
