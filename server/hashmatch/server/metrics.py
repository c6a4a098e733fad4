"""Prometheus metrics of one serving process, on a registry passed in (never a global).

With `--workers N` every worker writes its values to files in a folder shared with the
parent (prometheus-client's multiprocess mode, chosen by PROMETHEUS_MULTIPROC_DIR), and the
parent serves the aggregate. The names and labels served do not depend on the number of
workers: no `pid` label (each gauge says how the processes' values combine: the most, the
least or the sum over live processes; counters and histograms are summed), no `_created`
series (multiprocess mode has none), and the process_*/python_* series of the process
serving /metrics (with workers: the parent, which serves nothing else).
Labels never hold a hash, an item ID or a reference ID: only method, status code and
list name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import start_http_server

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds; dense below a millisecond, where unary matching lives.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


@dataclass
class Metrics:
    registry: CollectorRegistry
    rpcs: Counter
    latency: Histogram
    items: Counter
    matches: Counter
    list_version: Gauge
    index_entries: Gauge
    index_memory: Gauge
    changelog_lag_batches: Gauge
    changelog_lag_seconds: Gauge
    probe_flags: Counter
    replica_unverified_lists: Gauge
    replica_list_verified: Gauge
    replica_lag_versions: Gauge
    replica_lag_seconds: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        """Metrics on `registry`, or on a new one that also holds this process's
        process_*/python_* collectors."""
        disable_created_metrics()
        if registry is None:
            reg = CollectorRegistry()
            add_process_collectors(reg)
        else:
            reg = registry
        return cls(
            registry=reg,
            rpcs=Counter(
                "hashmatch_rpcs",
                "RPCs handled, by method and status code",
                ["method", "code"],
                registry=reg,
            ),
            latency=Histogram(
                "hashmatch_rpc_duration_seconds",
                "RPC duration in the handler, by method",
                ["method"],
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),
            items=Counter(
                "hashmatch_match_items",
                "Match items (uploads) checked, by method",
                ["method"],
                registry=reg,
            ),
            matches=Counter(
                "hashmatch_matches",
                "References matched, by list",
                ["list"],
                registry=reg,
            ),
            list_version=Gauge(
                "hashmatch_list_version",
                "List version served (the lowest over serving processes)",
                ["list"],
                multiprocess_mode="livemin",
                registry=reg,
            ),
            index_entries=Gauge(
                "hashmatch_index_entries",
                "Entries held in memory, by list and algorithm",
                ["list", "algorithm"],
                multiprocess_mode="livemax",
                registry=reg,
            ),
            index_memory=Gauge(
                "hashmatch_index_memory_bytes",
                "Approximate heap bytes of the in-memory indexes (the sum over serving processes)",
                multiprocess_mode="livesum",
                registry=reg,
            ),
            changelog_lag_batches=Gauge(
                "hashmatch_changelog_lag_batches",
                "Committed batches not applied yet (the most over serving processes)",
                multiprocess_mode="livemax",
                registry=reg,
            ),
            changelog_lag_seconds=Gauge(
                "hashmatch_changelog_lag_seconds",
                "Age of the oldest committed batch not applied yet (the most over serving "
                "processes)",
                multiprocess_mode="livemax",
                registry=reg,
            ),
            probe_flags=Counter(
                "hashmatch_probe_flags",
                "Tenants throttled for probing a listed PDQ hash (oracle walks)",
                registry=reg,
            ),
            replica_unverified_lists=Gauge(
                "hashmatch_replica_unverified_lists",
                "Lists a replica does not serve: being copied, or found to differ from the "
                "primary's and being copied again (the most over serving processes)",
                multiprocess_mode="livemax",
                registry=reg,
            ),
            replica_list_verified=Gauge(
                "hashmatch_replica_list_verified",
                "1 while a replica serves the list (its copy checked out against the "
                "primary's digest), 0 while it does not (the least over serving processes)",
                ["list"],
                multiprocess_mode="livemin",
                registry=reg,
            ),
            replica_lag_versions=Gauge(
                "hashmatch_replica_lag_versions",
                "On a replica, the primary's version of the list minus the version copied "
                "here (the most over serving processes)",
                ["list"],
                multiprocess_mode="livemax",
                registry=reg,
            ),
            replica_lag_seconds=Gauge(
                "hashmatch_replica_lag_seconds",
                "On a replica, the age of the oldest batch of the list received from the "
                "primary and not applied yet; 0 when caught up (the most over serving "
                "processes)",
                ["list"],
                multiprocess_mode="livemax",
                registry=reg,
            ),
        )


def add_process_collectors(registry: CollectorRegistry) -> None:
    """process_* (CPU, memory, file descriptors), python_info and python_gc_* of the
    calling process."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def serve_http(listen: str, registry: CollectorRegistry) -> tuple[Any, int]:
    """Starts the /metrics endpoint on HOST:PORT; returns (server, bound port)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    server, _thread = start_http_server(int(port), addr=host, registry=registry)
    return server, int(server.server_port)


def aggregate_registry(path: str) -> CollectorRegistry:
    """The parent's registry in multiprocess mode: what workers wrote, combined as each
    metric says, plus the parent's own process_*/python_* series."""
    from prometheus_client import multiprocess

    disable_created_metrics()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    add_process_collectors(registry)
    return registry


def mark_dead(pid: int) -> None:
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)
