"""Assembles a serving process: store, index follower, gRPC server, health, reflection.

`build` has no signals, globals or fixed port (tests call it with port 0); `serve` owns
signals and the orderly shutdown: health NOT_SERVING, drain in-flight calls, close LMDB.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hashmatch.client.connection import Connection
from hashmatch.server import demo
from hashmatch.server.core import Index
from hashmatch.server.follower import IndexFollower
from hashmatch.server.handlers import service_handler
from hashmatch.server.list_service import ListServicer
from hashmatch.server.match_service import MatchServicer
from hashmatch.server.replica import Replicator
from hashmatch.server.replication_service import ReplicationServicer
from hashmatch.server.settings import Settings
from hashmatch.server.store import Store
from hashmatch.v1 import lists_pb2, match_pb2, replication_pb2

log = logging.getLogger(__name__)

SERVICES = (
    match_pb2.DESCRIPTOR.services_by_name["MatchService"],
    lists_pb2.DESCRIPTOR.services_by_name["ListService"],
    replication_pb2.DESCRIPTOR.services_by_name["ReplicationService"],
)


@dataclass
class Service:
    settings: Settings
    store: Store
    follower: IndexFollower
    server: grpc.Server
    health: health.HealthServicer
    port: int
    replicator: Replicator | None = None

    def stop(self, grace: float | None = None) -> None:
        for svc in ("", *(s.full_name for s in SERVICES)):
            self.health.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(self.settings.grace if grace is None else grace).wait()
        if self.replicator is not None:
            self.replicator.stop()
        self.follower.stop()
        self.store.close()


def build(settings: Settings) -> Service:
    """Opens the store, loads the indexes and starts serving on settings.listen."""
    store = Store(settings.data_dir, map_size=settings.map_size)
    try:
        if settings.demo:
            demo.ensure_demo(store, settings.data_dir)
        follower = IndexFollower(store, Index(), settings.poll_interval)
        follower.start()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="rpc"),
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # A port already in use must fail loudly, not be silently shared.
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers(
            [
                service_handler(SERVICES[0], MatchServicer(store, follower), store.authenticate),
                service_handler(
                    SERVICES[1],
                    ListServicer(store, follower, primary=settings.follow),
                    store.authenticate,
                ),
                service_handler(SERVICES[2], ReplicationServicer(store), store.authenticate),
            ]
        )
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            [*(s.full_name for s in SERVICES), health.SERVICE_NAME, reflection.SERVICE_NAME],
            server,
        )
        port = server.add_insecure_port(settings.listen)
        server.start()
        for svc in ("", *(s.full_name for s in SERVICES)):
            health_servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
        replicator = None
        if settings.follow:
            replicator = Replicator(
                store, follower, Connection(server=settings.follow, token=settings.follow_token)
            )
            replicator.start()
    except BaseException:
        store.close()
        raise
    return Service(settings, store, follower, server, health_servicer, port, replicator)


def serve(settings: Settings) -> None:
    service = build(settings)
    host = settings.listen.rsplit(":", 1)[0]
    # Tests and scripts read this line to learn the port when it was chosen by the OS.
    print(f"hashmatch serving on {host}:{service.port}", flush=True)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received signal %d: draining", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    service.stop()
    log.info("stopped")
