"""Assembles a serving process: store, index follower, gRPC server, health, reflection.

`build` has no signals, globals or fixed port (tests call it with port 0); `serve` owns
signals and the orderly shutdown: health NOT_SERVING, drain in-flight calls, flush match
statistics, close LMDB. `--workers N` is `workers.supervise`, which runs `build` in N
spawned processes.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hashmatch.client.connection import Connection
from hashmatch.server import demo
from hashmatch.server.auth import TenantCache
from hashmatch.server.core import Index
from hashmatch.server.follower import IndexFollower
from hashmatch.server.handlers import Pipeline, service_handler
from hashmatch.server.limits import DeadlineReaper, RateLimiter
from hashmatch.server.list_service import ListServicer
from hashmatch.server.match_service import MatchServicer
from hashmatch.server.metrics import Metrics, serve_http
from hashmatch.server.observers import RpcLog, RpcMetrics
from hashmatch.server.platform_service import PlatformServicer
from hashmatch.server.replica import Replicator
from hashmatch.server.replication_service import ReplicationServicer
from hashmatch.server.settings import Settings
from hashmatch.server.stats import MatchCounts, StatsFlusher
from hashmatch.server.store import Store
from hashmatch.server.tls import server_credentials
from hashmatch.v1 import lists_pb2, match_pb2, platform_pb2, replication_pb2

log = logging.getLogger(__name__)

SERVICES = (
    match_pb2.DESCRIPTOR.services_by_name["MatchService"],
    lists_pb2.DESCRIPTOR.services_by_name["ListService"],
    replication_pb2.DESCRIPTOR.services_by_name["ReplicationService"],
    platform_pb2.DESCRIPTOR.services_by_name["PlatformService"],
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
    metrics: Metrics | None = None
    stats: StatsFlusher | None = None
    reaper: DeadlineReaper | None = None
    # The /metrics HTTP server when this process serves it, and its port.
    metrics_http: Any = None
    metrics_port: int | None = None

    def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING → drain in-flight calls → flush statistics → close LMDB."""
        for svc in ("", *(s.full_name for s in SERVICES)):
            self.health.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(self.settings.grace if grace is None else grace).wait()
        if self.replicator is not None:
            self.replicator.stop()
        if self.reaper is not None:
            self.reaper.stop()
        if self.stats is not None:
            try:
                self.stats.stop()
            except Exception:
                log.exception("flushing match statistics on shutdown failed")
        self.follower.stop()
        self.store.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()


def server_options(settings: Settings, reuse_port: bool) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # One process: a port already in use must fail loudly, not be silently shared.
        # Several workers share it; their parent has made sure it was free.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


def build(
    settings: Settings,
    *,
    reuse_port: bool = False,
    metrics: Metrics | None = None,
    serve_metrics: bool = True,
    replicate: bool = True,
) -> Service:
    """Opens the store, loads the indexes and starts serving on settings.listen.

    `reuse_port` is for workers sharing a port; `metrics` lets the caller pass its
    registry; `serve_metrics=False` leaves /metrics to the caller (the workers' parent);
    `replicate=False` serves a replica's store without copying the primary into it (one
    worker of a replica copies, the others serve what it wrote).
    """
    metrics = metrics if metrics is not None else Metrics.create()
    store = Store(settings.data_dir, map_size=settings.map_size)
    follower: IndexFollower | None = None
    reaper: DeadlineReaper | None = None
    stats: StatsFlusher | None = None
    try:
        if settings.demo:
            demo.ensure_demo(store, settings.data_dir)
        follower = IndexFollower(store, Index(), settings.poll_interval)
        follower.start()
        counts = MatchCounts()
        stats = StatsFlusher(store, follower, counts, metrics, settings.stats_interval)
        reaper = DeadlineReaper()
        pipeline = Pipeline(
            authenticate=TenantCache(store),
            limiter=RateLimiter.from_settings(settings),
            reaper=reaper,
            deadline_cap=settings.deadline_cap,
            stream_deadline_cap=settings.stream_deadline_cap,
            observers=(RpcLog(), RpcMetrics(metrics)),
        )
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="rpc"),
            options=server_options(settings, reuse_port),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        server.add_generic_rpc_handlers(
            [
                service_handler(
                    SERVICES[0], MatchServicer(store, follower, counts, metrics), pipeline
                ),
                service_handler(
                    SERVICES[1], ListServicer(store, follower, primary=settings.follow), pipeline
                ),
                service_handler(SERVICES[2], ReplicationServicer(store), pipeline),
                service_handler(SERVICES[3], PlatformServicer(store, follower), pipeline),
            ]
        )
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            [*(s.full_name for s in SERVICES), health.SERVICE_NAME, reflection.SERVICE_NAME],
            server,
        )
        credentials = server_credentials(settings)
        if credentials is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, credentials)
        metrics_http, metrics_port = None, None
        if serve_metrics and settings.metrics_listen:
            metrics_http, metrics_port = serve_http(settings.metrics_listen, metrics.registry)
        server.start()
        stats.start()
        for svc in ("", *(s.full_name for s in SERVICES)):
            health_servicer.set(svc, health_pb2.HealthCheckResponse.SERVING)
        replicator = None
        if settings.follow and replicate:
            replicator = Replicator(
                store, follower, Connection(server=settings.follow, token=settings.follow_token)
            )
            replicator.start()
    except BaseException:
        if reaper is not None:
            reaper.stop()
        if follower is not None:
            follower.stop()
        store.close()
        raise
    return Service(
        settings,
        store,
        follower,
        server,
        health_servicer,
        port,
        replicator,
        metrics,
        stats,
        reaper,
        metrics_http,
        metrics_port,
    )


def wait_for_signal() -> int:
    """Blocks until SIGTERM or SIGINT; returns the signal number."""
    stopping = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stopping.wait()
    return received[0]


def serve(settings: Settings) -> None:
    if settings.workers > 1:
        from hashmatch.server.workers import supervise

        supervise(settings)
        return
    service = build(settings)
    host = settings.listen.rsplit(":", 1)[0]
    if service.metrics_port is not None:
        log.info(
            "metrics on port %d", service.metrics_port, extra={"metrics_port": service.metrics_port}
        )
    # Tests and scripts read this line to learn the port when it was chosen by the OS.
    print(f"hashmatch serving on {host}:{service.port}", flush=True)
    signum = wait_for_signal()
    log.info("received signal %d: draining", signum)
    service.stop()
    log.info("stopped")
