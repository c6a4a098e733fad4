"""Assembles a serving process: store, index follower, asyncio gRPC server, health,
reflection.

`build` has no signals, globals or fixed port (tests call it with port 0): it starts the
server on an event loop of its own thread and returns. `main.serve` owns signals and the
orderly shutdown (`Service.stop`): health NOT_SERVING, drain in-flight calls, flush match
statistics, close LMDB.

A replica's process reports NOT_SERVING while any list is unverified (being copied, or
found to differ from the primary's): that list answers NO_MATCH meanwhile (ReplicaHealth);
and, with max_lag set, while its copy is not proven current (its lists are still served).
A store marked as a replica is never served without --follow (store/replica_state.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from hashmatch.client.connection import Connection, RetryPolicy
from hashmatch.server import demo
from hashmatch.server.core import Index
from hashmatch.server.matching.matcher import Matcher
from hashmatch.server.matching.probes import ProbeDetector, ProbePolicy
from hashmatch.server.metrics import Metrics, serve_http
from hashmatch.server.rpc.auth import BadTokenThrottle, TenantCache
from hashmatch.server.rpc.limits import Admission, LoadShedder, RateLimiter
from hashmatch.server.rpc.observers import RpcLog, RpcMetrics
from hashmatch.server.rpc.pipeline import Pipeline, service_handler
from hashmatch.server.rpc.tls import server_credentials
from hashmatch.server.services.lists import ListServicer
from hashmatch.server.services.match import MatchServicer
from hashmatch.server.services.platform import PlatformServicer
from hashmatch.server.services.replication import ReplicationServicer
from hashmatch.server.settings import Settings, SettingsError
from hashmatch.server.store import Store, replica_state
from hashmatch.server.store.probes import ProbeLedger
from hashmatch.server.sync.follower import IndexFollower
from hashmatch.server.sync.replica import Replicator, reconnect_ceiling
from hashmatch.server.sync.segments import SegmentFiles
from hashmatch.server.sync.stats import MatchCounts, StatsFlusher
from hashmatch.v1 import lists_pb2, match_pb2, platform_pb2, replication_pb2

log = logging.getLogger(__name__)

SERVICES = (
    match_pb2.DESCRIPTOR.services_by_name["MatchService"],
    lists_pb2.DESCRIPTOR.services_by_name["ListService"],
    replication_pb2.DESCRIPTOR.services_by_name["ReplicationService"],
    platform_pb2.DESCRIPTOR.services_by_name["PlatformService"],
)

T = TypeVar("T")


class EventLoop:
    """The event loop every call of this process runs on, on a thread of its own, with
    the thread pool for calls that block."""

    def __init__(self, threads: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rpc")
        self.loop.set_default_executor(self.pool)
        self._background: list[asyncio.Task[None]] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name="rpc-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on the loop and waits for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs `coro` on the loop for as long as the loop runs."""

        async def start() -> None:
            self._background.append(asyncio.get_running_loop().create_task(coro))

        self.run(start())

    def close(self) -> None:
        async def cancel() -> None:
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)

        self.run(cancel())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.pool.shutdown(wait=True)
        self.loop.close()


@dataclass
class Service:
    settings: Settings
    store: Store
    follower: IndexFollower
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    loop: EventLoop
    replicator: Replicator | None = None
    metrics: Metrics | None = None
    stats: StatsFlusher | None = None
    # The /metrics HTTP server when this process serves it, and its port.
    metrics_http: Any = None
    metrics_port: int | None = None
    probes: ProbeLedger | None = None
    replica_health: ReplicaHealth | None = None
    serving: replica_state.ServingLock | None = None

    def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING → drain in-flight calls → flush statistics → close LMDB."""
        seconds = self.settings.grace if grace is None else grace
        if self.replica_health is not None:
            self.replica_health.close()

        async def drain() -> None:
            for svc in ("", *(s.full_name for s in SERVICES)):
                await self.health.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
            await self.server.stop(seconds)

        self.loop.run(drain())
        if self.replicator is not None:
            self.replicator.stop()
        if self.stats is not None:
            try:
                self.stats.stop()
            except Exception:
                log.exception("flushing match statistics on shutdown failed")
        self.follower.stop()
        self.loop.close()
        if self.probes is not None:
            self.probes.close()
        self.store.close()
        if self.serving is not None:
            self.serving.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()


class ReplicaHealth:
    """Health and metrics of a replica's lists, in every serving process of the replica:
    health NOT_SERVING (the whole server and MatchService) while the store marks any list
    unverified or the copy stale, SERVING again once neither holds. Called by the index
    follower whenever either changes."""

    SERVICES = ("", SERVICES[0].full_name)

    def __init__(
        self,
        follower: IndexFollower,
        health_servicer: health.aio.HealthServicer,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics,
        reported: tuple[frozenset[str], str | None],
    ) -> None:
        self.follower = follower
        self.health = health_servicer
        self.loop = loop
        self.metrics = metrics
        self._lock = threading.Lock()
        self._closed = False
        self._reported = reported

    def refresh(self) -> None:
        with self._lock:
            if self._closed:
                return
            unverified = self.follower.unverified()
            for served in self.follower.lists().values():
                self.metrics.replica_list_verified.labels(served.name).set(1)
            for name in unverified:
                self.metrics.replica_list_verified.labels(name).set(0)
            self.metrics.replica_unverified_lists.set(len(unverified))
            stale = self.follower.stale()
            if (unverified, stale) == self._reported:
                return
            if unverified:
                log.warning(
                    "replica: health NOT_SERVING while lists are not verified: %s",
                    ", ".join(sorted(unverified)),
                )
            elif stale is not None:
                log.warning("replica: health NOT_SERVING: %s", stale)
            elif self._reported != (frozenset(), None):
                log.info("replica: every list verified and current; health SERVING")
            status = (
                health_pb2.HealthCheckResponse.NOT_SERVING
                if unverified or stale is not None
                else health_pb2.HealthCheckResponse.SERVING
            )
            # In order on the loop (each set takes effect when its task starts); never
            # waited for here: the follower calls from any thread.
            for svc in self.SERVICES:
                asyncio.run_coroutine_threadsafe(self.health.set(svc, status), self.loop)
            self._reported = (unverified, stale)

    def close(self) -> None:
        """Leaves health to the shutdown from now on."""
        with self._lock:
            self._closed = True
        self.follower.on_verification = None


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
    serving = replica_state.ServingLock(settings.data_dir)
    follower: IndexFollower | None = None
    loop: EventLoop | None = None
    ledger: ProbeLedger | None = None
    try:
        primary = replica_state.replica_of(store)
        if primary is not None and not settings.follow:
            raise SettingsError(
                f"{settings.data_dir} holds a replica of {primary}: serve it with --follow "
                "(the primary's HOST:PORT), or make it a primary with `hashmatch admin promote`"
            )
        if settings.follow and settings.max_lag and replicate:
            # Not in rotation before the replicator has proven the copy current, not even
            # for the moment between serving and its first check.
            replica_state.set_stale(store, f"not caught up with primary {settings.follow} yet")
        if settings.demo:
            demo.ensure_demo(store, settings.data_dir)
        segments = (
            SegmentFiles(settings.data_dir, quiet=settings.segment_quiet)
            if settings.segments
            else None
        )
        follower = IndexFollower(store, Index(), settings.poll_interval, segments)
        follower.start()
        counts = MatchCounts()
        ledger = ProbeLedger(settings.data_dir)
        probes = ProbeDetector(ledger=ledger, on_flag=_probe_flagged(store, metrics))
        stats = StatsFlusher(store, follower, counts, metrics, settings.stats_interval)
        shedder = LoadShedder()
        pipeline = Pipeline(
            authenticate=TenantCache(store),
            limiter=RateLimiter.from_settings(settings),
            admission=Admission.from_settings(settings),
            shedder=shedder,
            bad_tokens=BadTokenThrottle(),
            deadline_cap=settings.deadline_cap,
            stream_deadline_cap=settings.stream_deadline_cap,
            stream_idle_timeout=settings.stream_idle_timeout,
            observers=(RpcLog(), RpcMetrics(metrics)),
        )
        handlers = [
            service_handler(SERVICES[0], MatchServicer(Matcher(follower.index, probes)), pipeline),
            service_handler(
                SERVICES[1], ListServicer(store, follower, primary=settings.follow), pipeline
            ),
            service_handler(SERVICES[2], ReplicationServicer(store, follower), pipeline),
            service_handler(SERVICES[3], PlatformServicer(store, follower), pipeline),
        ]
        loop = EventLoop(settings.threads)
        # A replica with unverified lists, or a stale copy, starts NOT_SERVING.
        reported = (
            (follower.unverified(), follower.stale()) if settings.follow else (frozenset(), None)
        )
        server, health_servicer, port = loop.run(
            _start(settings, reuse_port, handlers, not_serving=reported != (frozenset(), None))
        )
        replica_health = None
        if settings.follow:
            replica_health = ReplicaHealth(
                follower, health_servicer, loop.loop, metrics, reported=reported
            )
            follower.on_verification = replica_health.refresh
            replica_health.refresh()
        loop.spawn(shedder.watch())
        metrics_http, metrics_port = None, None
        if serve_metrics and settings.metrics_listen:
            metrics_http, metrics_port = serve_http(settings.metrics_listen, metrics.registry)
        stats.start()
        replicator = None
        if settings.follow and replicate:
            replicator = Replicator(
                store,
                follower,
                Connection(
                    server=settings.follow,
                    token=settings.follow_token,
                    tls=settings.follow_tls(),
                    retry=RetryPolicy(max_backoff=reconnect_ceiling(settings.max_lag)),
                ),
                metrics=metrics,
                max_lag=settings.max_lag,
            )
            replicator.start()
    except BaseException:
        if loop is not None:
            loop.close()
        if follower is not None:
            follower.stop()
        if ledger is not None:
            ledger.close()
        store.close()
        serving.close()
        raise
    return Service(
        settings,
        store,
        follower,
        server,
        health_servicer,
        port,
        loop,
        replicator,
        metrics,
        stats,
        metrics_http,
        metrics_port,
        ledger,
        replica_health,
        serving,
    )


def _probe_flagged(store: Store, metrics: Metrics) -> Callable[[str, int], None]:
    def flagged(tenant: str, near_misses: int) -> None:
        metrics.probe_flags.inc()
        store.record_audit(
            "probe-detection",
            "throttle",
            tenant=tenant,
            near_misses=near_misses,
            seconds=ProbePolicy().cooldown,
        )

    return flagged


class _HealthServicer(health.aio.HealthServicer):
    """grpc.health.v1.Health with List: the package's servicer answers it UNIMPLEMENTED
    (and logs a traceback)."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class _ReflectionPool:
    """The process's descriptor pool plus grpc/reflection/v1/reflection.proto, which
    grpcio-reflection does not ship: v1alpha's file renamed (the same messages on the wire),
    kept out of the default pool so that it never clashes with a real v1 module."""

    def __init__(self) -> None:
        proto = descriptor_pb2.FileDescriptorProto()
        reflection_pb2.DESCRIPTOR.CopyToProto(proto)
        proto.name = "grpc/reflection/v1/reflection.proto"
        proto.package = "grpc.reflection.v1"
        for message in proto.message_type:
            for field in message.field:
                if field.HasField("type_name"):
                    field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
        for method in proto.service[0].method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
        proto.options.java_package = "io.grpc.reflection.v1"
        proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
        self._own = descriptor_pool.DescriptorPool()
        self._own.Add(proto)
        self._default = descriptor_pool.Default()

    def _find(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._own, method)(*args)
        except KeyError:
            return getattr(self._default, method)(*args)

    def FindFileByName(self, name: str) -> descriptor.FileDescriptor:
        return self._find("FindFileByName", name)

    def FindFileContainingSymbol(self, symbol: str) -> descriptor.FileDescriptor:
        return self._find("FindFileContainingSymbol", symbol)

    def FindMessageTypeByName(self, name: str) -> descriptor.Descriptor:
        return self._default.FindMessageTypeByName(name)

    def FindExtensionByNumber(self, message: descriptor.Descriptor, number: int) -> Any:
        return self._default.FindExtensionByNumber(message, number)

    def FindAllExtensions(self, message: descriptor.Descriptor) -> Any:
        return self._default.FindAllExtensions(message)


def _reflection_handlers(service_names: list[str]) -> list[grpc.GenericRpcHandler]:
    """Server reflection as v1 and v1alpha: one servicer, registered under both names."""
    servicer = reflection.aio.ReflectionServicer(service_names, pool=_ReflectionPool())
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    return [
        grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": method})
        for name in (REFLECTION_V1, reflection.SERVICE_NAME)
    ]


async def _start(
    settings: Settings,
    reuse_port: bool,
    handlers: list[grpc.GenericRpcHandler],
    not_serving: bool = False,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    server = grpc.aio.server(options=server_options(settings, reuse_port))
    server.add_generic_rpc_handlers(handlers)
    health_servicer = _HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_generic_rpc_handlers(
        _reflection_handlers(
            [
                *(s.full_name for s in SERVICES),
                health.SERVICE_NAME,
                REFLECTION_V1,
                reflection.SERVICE_NAME,
            ]
        )
    )
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, credentials)
    await server.start()
    for svc in ("", *(s.full_name for s in SERVICES)):
        down = not_serving and svc in ReplicaHealth.SERVICES
        await health_servicer.set(
            svc,
            health_pb2.HealthCheckResponse.NOT_SERVING
            if down
            else health_pb2.HealthCheckResponse.SERVING,
        )
    return server, health_servicer, port
