"""Several hosts on one machine: a primary, three replicas and HAProxy, each in a network
namespace of its own (tests/multihost_net.py), platforms calling through the balancer.

Asserted by behaviour, never by timing (each wait has a bound only so that a broken build
cannot hang): a retraction answers NO_MATCH through the balancer within the freshness
bound; killing a replica with calls in flight fails no call once the client has retried; a
replica that falls behind, or whose copy diverges, leaves the rotation by its health and
comes back once current; a primary restart leaves reads served throughout; and a replica
is promoted to primary (refused while behind) with the others following it and no
acknowledged batch lost. The last tests check the same rules on loopback or on a store
alone, and run where namespaces cannot be made too.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import multihost_net as net
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import TENANTS as ROLES
from conftest import Running
from hashmatch.client import MD5, Connection, ListClient, MatchClient, RetryPolicy
from hashmatch.client.list_client import build_batch
from hashmatch.server.app import build
from hashmatch.server.core import parse_changes
from hashmatch.server.settings import Settings, SettingsError
from hashmatch.server.store import Role, Store, replica_state
from helpers import hashes, random_digest, retire, upsert

SKIP = net.unavailable()
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# A replica not proven current for this long reports NOT_SERVING (hashmatch serve --max-lag).
MAX_LAG = 6.0
# Within this a committed change is served through the balancer: max_lag, then HAProxy's
# checks (200 ms, 2 failures), with room for a loaded machine.
FRESHNESS_BOUND = MAX_LAG + 6.0
# Consecutive answers that make "every replica in rotation answers so" (HAProxy spreads
# calls over the replicas, so a dozen in a row cover each one several times).
IN_A_ROW = 12
HASHMATCH_CLIENT = str(Path(sys.executable).parent / "hashmatch-client")
TENANTS = {
    "platform": Role.PLATFORM,
    "hotline": Role.HOTLINE,
    "mirror": Role.REPLICA,
}


@dataclass
class Cluster:
    network: net.Network
    tmp: Path
    tokens: dict[str, str]
    primary_host: net.Host
    primary: net.Server
    replica_hosts: list[net.Host]
    replicas: list[net.Server]
    balancer: net.Balancer | None

    def follow_args(self, primary: net.Host, max_lag: float = MAX_LAG) -> list[str]:
        return [
            "--follow",
            primary.endpoint,
            "--token",
            self.tokens["mirror"],
            "--max-lag",
            str(max_lag),
        ]

    def start_replica(self, i: int, primary: net.Host | None = None) -> net.Server:
        host = self.replica_hosts[i]
        server = host.serve(self.tmp / host.name, *self.follow_args(primary or self.primary_host))
        self.replicas[i] = server
        return server

    def hotline(self, host: net.Host | None = None) -> ListClient:
        host = host or self.primary_host
        return ListClient(Connection(server=host.endpoint, token=self.tokens["hotline"]))

    def platform(self, endpoint: str, attempts: int = 4) -> MatchClient:
        """A platform's client; the default policy retries UNAVAILABLE."""
        return MatchClient(
            Connection(
                server=endpoint,
                token=self.tokens["platform"],
                timeout=10.0,
                retry=RetryPolicy(attempts=attempts),
            )
        )

    def lists_on(self, host: net.Host) -> set[tuple[str, int, str]]:
        client = ListClient(
            Connection(
                server=host.endpoint,
                token=self.tokens["mirror"],
                timeout=5.0,
                retry=RetryPolicy(attempts=1),
            )
        )
        try:
            return {(x.name, x.version, x.digest) for x in client.list_lists()}
        except Exception:
            return set()


def make_cluster(tmp: Path, *, balancer: bool) -> Iterator[Cluster]:
    if SKIP is not None:
        pytest.skip(f"multi-host test skipped: {SKIP}")
    logs = tmp / "logs"
    logs.mkdir()
    network = net.Network(logs)
    try:
        primary_host = network.add("primary", 10)
        replica_hosts = [network.add(f"r{i + 1}", 11 + i) for i in range(3)]
        lb_host = network.add("lb", 2) if balancer else None
        tokens = _tenants(tmp / "primary")
        primary = primary_host.serve(tmp / "primary")
        cluster = Cluster(network, tmp, tokens, primary_host, primary, replica_hosts, [], None)
        cluster.replicas = [
            h.serve(tmp / h.name, *cluster.follow_args(primary_host)) for h in replica_hosts
        ]
        if lb_host is not None:
            cluster.balancer = net.Balancer(lb_host, replica_hosts, tmp)
        yield cluster
    finally:
        network.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(tmp_path, balancer=True)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Cluster]:
    yield from make_cluster(tmp_path, balancer=False)


def _tenants(data_dir: Path) -> dict[str, str]:
    tokens = {}
    for name, role in TENANTS.items():
        argv = [net.HASHMATCH, "admin", "add-tenant", name, "--role", role.value, "--create"]
        done = subprocess.run(
            [*argv, "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        tokens[name] = done.stdout.strip().splitlines()[-1]
    return tokens


def health(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status  # type: ignore[no-any-return]
        except grpc.RpcError:
            return -1


def matched(client: MatchClient, value: bytes) -> bool:
    return client.match(hashes((MD5, value))).matched


def answers_in_a_row(client: MatchClient, value: bytes, expected: bool) -> bool:
    """Whether IN_A_ROW calls all answer `expected` (every replica in rotation does)."""
    return all(matched(client, value) == expected for _ in range(IN_A_ROW))


def all_up(balancer: net.Balancer, count: int = 3) -> bool:
    states = balancer.states()
    return len(states) == count and all(s == "UP" for s in states.values())


class Readers:
    """Threads matching known hashes through one endpoint until stopped: every answer is
    either the expected verdict or a failure (an error after the client's retries, or a
    wrong verdict)."""

    def __init__(self, client: MatchClient, expected: dict[bytes, bool], threads: int = 4):
        self.client = client
        self.expected = list(expected.items())
        self.calls = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            value, want = rng.choice(self.expected)
            try:
                wrong = None if matched(self.client, value) == want else "wrong verdict"
            except Exception as exc:
                wrong = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.calls += 1
                if wrong is not None:
                    self.failures.append(wrong)

    def wait_calls(self, more: int) -> None:
        target = self.calls + more
        net.wait_for(lambda: self.calls >= target, f"{more} more calls answered")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def _load(cluster: Cluster, count: int = 200) -> list[bytes]:
    rng = random.Random(14)
    values = [random_digest(rng, MD5) for _ in range(count)]
    hotline = cluster.hotline()
    hotline.create_list("iwf")
    hotline.apply_changes("iwf", "load", [upsert(MD5, v, f"R-{i}") for i, v in enumerate(values)])
    return values


def _caught_up(cluster: Cluster) -> bool:
    want = cluster.lists_on(cluster.primary_host)
    return bool(want) and all(cluster.lists_on(h) == want for h in cluster.replica_hosts)


def test_replicas_behind_haproxy(cluster: Cluster) -> None:
    balancer = cluster.balancer
    assert balancer is not None
    values = _load(cluster)
    net.wait_for(lambda: _caught_up(cluster), "every replica holds the primary's lists")
    net.wait_for(lambda: all_up(balancer), "HAProxy has every replica in rotation")
    platform = cluster.platform(balancer.endpoint)
    assert matched(platform, values[0])

    # A retraction on the primary answers NO_MATCH through the balancer within the bound.
    cluster.hotline().apply_changes("iwf", "retract-0", [retire(MD5, values[0])])
    net.wait_for(
        lambda: answers_in_a_row(platform, values[0], False),
        "the retraction is answered through the balancer",
        limit=FRESHNESS_BOUND,
    )

    # A replica killed with calls in flight: no call fails once the client has retried.
    readers = Readers(platform, {values[1]: True, values[2]: True, values[0]: False})
    try:
        readers.wait_calls(100)
        cluster.replicas[1].stop(signal.SIGKILL)
        net.wait_for(lambda: balancer.states()["r2"].startswith("DOWN"), "r2 out of rotation")
        readers.wait_calls(100)
    finally:
        readers.stop()
    assert readers.failures == []
    cluster.start_replica(1)
    net.wait_for(lambda: all_up(balancer), "the restarted replica back in rotation")

    # A replica cut off from the primary falls behind: out of rotation by its own health
    # once max_lag passes, while the others serve the new retraction.
    r3 = cluster.replica_hosts[2]
    r3.cut(cluster.primary_host)
    cluster.hotline().apply_changes("iwf", "retract-3", [retire(MD5, values[3])])
    net.wait_for(
        lambda: balancer.states()["r3"].startswith("DOWN"),
        "the replica behind leaves the rotation",
        limit=FRESHNESS_BOUND,
    )
    assert health(r3.endpoint) == NOT_SERVING
    assert matched(cluster.platform(r3.endpoint, attempts=1), values[3])  # stale, and out
    assert answers_in_a_row(platform, values[3], False)

    # Its copy diverges meanwhile (a write the primary never made); reconnected, it finds
    # out, re-copies the list and comes back with the primary's copy: the foreign entry is
    # never answered through the balancer.
    foreign = random_digest(random.Random(99), MD5)
    _write_behind_its_back(cluster.tmp / "r3", foreign)
    net.wait_for(
        lambda: matched(cluster.platform(r3.endpoint, attempts=1), foreign),
        "the replica serves the foreign entry",
    )
    log_start = cluster.replicas[2].log.stat().st_size
    r3.heal(cluster.primary_host)
    readers = Readers(platform, {foreign: False, values[3]: False, values[4]: True})
    try:
        net.wait_for(
            lambda: "does not match primary" in cluster.replicas[2].log_text(log_start),
            "the replica notices its copy differs",
        )
        net.wait_for(lambda: all_up(balancer), "the re-copied replica back in rotation")
        readers.wait_calls(50)
    finally:
        readers.stop()
    assert readers.failures == []
    assert cluster.lists_on(r3) == cluster.lists_on(cluster.primary_host)

    # The primary restarts: reads are served throughout, and the replicas follow it again.
    readers = Readers(platform, {values[5]: True, values[3]: False})
    try:
        readers.wait_calls(50)
        assert cluster.primary.stop() == 0
        readers.wait_calls(50)
        cluster.primary = cluster.primary_host.serve(cluster.tmp / "primary")
        readers.wait_calls(50)
        assert all_up(balancer)
    finally:
        readers.stop()
    assert readers.failures == []
    cluster.hotline().apply_changes("iwf", "retract-6", [retire(MD5, values[6])])
    net.wait_for(
        lambda: answers_in_a_row(platform, values[6], False),
        "a change after the restart is answered through the balancer",
        limit=FRESHNESS_BOUND,
    )


def _write_behind_its_back(data_dir: Path, value: bytes) -> None:
    """Commits a batch to a stopped-following replica's store directly (as a restored
    wrong backup or a disk error might): its copy then differs from the primary's."""
    store = Store(data_dir)
    try:
        request = build_batch("iwf", "foreign", [upsert(MD5, value, "FOREIGN")])
        store.apply_changes("iwf", parse_changes(request.SerializeToString(), 50), actor="test")
    finally:
        store.close()


def _push(
    endpoint: str, token: str, list_name: str, path: Path
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HASHMATCH_SERVER": endpoint, "HASHMATCH_TOKEN": token}
    return subprocess.run(
        [HASHMATCH_CLIENT, "push", list_name, str(path), "--batch-size", "50"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _admin(
    host: net.Host, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [net.HASHMATCH, "admin", *args]
    if token is not None:
        argv += ["--token", token]
    return host.run(argv)


def test_promotion(hosts: Cluster, tmp_path: Path) -> None:
    cluster = hosts
    primary, (h1, h2, h3) = cluster.primary_host, cluster.replica_hosts
    values = _load(cluster, count=50)
    net.wait_for(lambda: _caught_up(cluster), "every replica holds the primary's lists")

    # r3 falls behind: cut off before a batch that r1 and r2 receive.
    h3.cut(primary)
    cluster.hotline().apply_changes("iwf", "retract-0", [retire(MD5, values[0])])
    net.wait_for(
        lambda: cluster.lists_on(h1) == cluster.lists_on(primary) == cluster.lists_on(h2),
        "r1 and r2 have the retraction",
    )
    # Then the primary loses every replica and acknowledges a push that reaches none.
    for host in (h1, h2):
        primary.cut(host)
    rng = random.Random(5)
    pushed = [random_digest(rng, MD5) for _ in range(120)]
    listfile = tmp_path / "pushed.csv"
    listfile.write_text("".join(f"md5,{v.hex()},P-{i}\n" for i, v in enumerate(pushed)))
    cluster.hotline().create_list("pushed")
    done = _push(primary.endpoint, cluster.tokens["hotline"], "pushed", listfile)
    assert done.returncode == 0, done.stderr
    assert "pushed" not in {name for name, _, _ in cluster.lists_on(h1)}
    # The primary is lost.
    cluster.primary.stop(signal.SIGKILL)

    # A replica's folder is never served as a primary by mistake.
    cluster.replicas[0].stop()
    refused = h1.run(
        [net.HASHMATCH, "serve", "--data-dir", str(cluster.tmp / "r1"), "--listen", h1.endpoint]
    )
    assert refused.returncode == 2
    assert f"holds a replica of {primary.endpoint}" in refused.stderr
    cluster.start_replica(0)

    # Promotion is refused while the replica runs, and for the replica that is behind.
    token = cluster.tokens["mirror"]
    running = _admin(h1, "promote", "--data-dir", str(cluster.tmp / "r1"))
    assert running.returncode == 1
    assert "stop it first" in running.stderr
    cluster.replicas[2].stop()
    behind = _admin(
        h3,
        "promote",
        "--data-dir",
        str(cluster.tmp / "r3"),
        "--peer",
        h1.endpoint,
        "--peer",
        h2.endpoint,
        token=token,
    )
    assert behind.returncode == 1
    assert f"iwf: at version 1, behind peer {h1.endpoint} at version 2" in behind.stderr
    assert replica_state_of(cluster.tmp / "r3") == primary.endpoint

    # r1 is caught up with its peers: promoted, it serves as the primary.
    cluster.replicas[0].stop()
    promoted = _admin(
        h1, "promote", "--data-dir", str(cluster.tmp / "r1"), "--peer", h2.endpoint, token=token
    )
    assert promoted.returncode == 0, promoted.stderr
    assert replica_state_of(cluster.tmp / "r1") is None
    cluster.replicas[0] = h1.serve(cluster.tmp / "r1")
    # The others follow it: r2 as it is, r3 catching up on what it missed.
    cluster.replicas[1].stop()
    cluster.start_replica(1, primary=h1)
    cluster.start_replica(2, primary=h1)
    cluster.primary_host = h1
    net.wait_for(
        lambda: cluster.lists_on(h2) == cluster.lists_on(h1) == cluster.lists_on(h3),
        "r2 and r3 follow the new primary",
    )
    assert not matched(cluster.platform(h3.endpoint, attempts=1), values[0])
    # Writes go to the new primary; the replicas get them.
    cluster.hotline(h1).apply_changes("iwf", "after", [retire(MD5, values[1])])
    net.wait_for(
        lambda: not matched(cluster.platform(h3.endpoint, attempts=1), values[1]),
        "a write to the new primary reaches a replica",
    )

    # The push the old primary acknowledged reached no replica: the hotline creates the
    # list on the new primary and runs the same push again, which restores every entry.
    cluster.hotline(h1).create_list("pushed")
    again_push = _push(h1.endpoint, cluster.tokens["hotline"], "pushed", listfile)
    assert again_push.returncode == 0, again_push.stderr
    net.wait_for(
        lambda: all(
            matched(cluster.platform(h.endpoint, attempts=1), pushed[-1]) for h in (h2, h3)
        ),
        "the restored push is served by the replicas",
    )

    # The old primary comes back demoted: never as a second primary. It follows the new
    # one and ends up with the new primary's lists.
    old = cluster.tmp / "primary"
    assert _admin(primary, "demote", h1.endpoint, "--data-dir", str(old)).returncode == 0
    again = primary.run(
        [net.HASHMATCH, "serve", "--data-dir", str(old), "--listen", primary.endpoint]
    )
    assert again.returncode == 2
    for host in (h1, h2, h3):
        primary.heal(host)
    primary.serve(old, *cluster.follow_args(h1))
    net.wait_for(
        lambda: cluster.lists_on(primary) == cluster.lists_on(h1),
        "the old primary holds the new primary's lists",
    )


def replica_state_of(data_dir: Path) -> str | None:
    store = Store(data_dir)
    try:
        return replica_state.replica_of(store)
    finally:
        store.close()


# Promotion's rules on a store alone (these run everywhere, namespaces or not).


def _replica_store(path: Path) -> Store:
    store = Store(path)
    store.create_list("a", "hotline", pdq_threshold=31, pdq_min_quality=50)
    request = build_batch("a", "b1", [upsert(MD5, bytes(range(16)), "R")])
    store.apply_changes("a", parse_changes(request.SerializeToString(), 50), actor="test")
    replica_state.follow(store, "10.0.0.10:50051")
    return store


def test_promotion_refuses_a_replica_behind_what_it_heard_or_a_peer(tmp_path: Path) -> None:
    store = _replica_store(tmp_path)
    try:
        assert replica_state.promotion_problems(store, {}) == []
        replica_state.note_primary_versions(store, {"a": 2})
        assert replica_state.promotion_problems(store, {}) == [
            "a: at version 1, behind the primary's version 2 that this replica heard of"
        ]
        replica_state.note_primary_versions(store, {"a": 1})  # never lowered
        assert replica_state.primary_versions(store) == {"a": 2}
    finally:
        store.close()

    store = _replica_store(tmp_path / "second")
    try:
        peers = {
            "r2:50051": [replica_state.PeerList("a", 2, b"x" * 16)],
            "r3:50051": [replica_state.PeerList("a", 1, b"y" * 16)],
            "r4:50051": [replica_state.PeerList("b", 1, b"z" * 16)],
        }
        assert replica_state.promotion_problems(store, peers) == [
            "a: at version 1, behind peer r2:50051 at version 2",
            "a: same version 1 as peer r3:50051 but another digest",
            "b: held by peer r4:50051 but not here",
        ]
        same = {"r2:50051": [replica_state.PeerList("a", 1, store.lists()[0].digest)]}
        assert replica_state.promotion_problems(store, same) == []
    finally:
        store.close()


def test_a_promoted_store_serves_as_primary_and_a_demoted_one_only_follows(
    tmp_path: Path,
) -> None:
    store = _replica_store(tmp_path)
    replica_state.set_stale(store, "cut off")
    store.close()
    settings = Settings(data_dir=tmp_path, listen="127.0.0.1:0")
    with pytest.raises(SettingsError, match=re.escape("holds a replica of 10.0.0.10:50051")):
        build(settings)

    store = Store(tmp_path)
    try:
        assert replica_state.promote(store, actor="test") == "10.0.0.10:50051"
        assert replica_state.replica_of(store) is None
        assert replica_state.stale_reason(store) is None
        assert replica_state.primary_versions(store) == {}
        assert [r["action"] for r in store.audit_log(5)][-1] == "promote"
    finally:
        store.close()
    service = build(settings)
    try:
        assert replica_state.being_served(tmp_path)
    finally:
        service.stop(grace=0)
    assert not replica_state.being_served(tmp_path)

    store = Store(tmp_path)
    try:
        replica_state.demote(store, "10.0.0.11:50051", actor="test")
    finally:
        store.close()
    with pytest.raises(SettingsError, match=re.escape("holds a replica of 10.0.0.11:50051")):
        build(settings)


def test_max_lag_takes_a_replica_cut_off_from_its_primary_out_of_rotation(tmp_path: Path) -> None:
    """On loopback (no namespaces needed): health follows the primary's heartbeats."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def primary() -> Running:
        settings = Settings(data_dir=tmp_path / "p", listen=f"127.0.0.1:{port}", poll_interval=0.01)
        return Running(build(settings), tokens)

    tokens: dict[str, str] = {}
    first = primary()
    tokens.update({n: first.service.store.add_tenant(n, r) for n, r in ROLES.items()})
    first.lists().create_list("a")
    replica = build(
        Settings(
            data_dir=tmp_path / "r",
            listen="127.0.0.1:0",
            poll_interval=0.01,
            follow=f"127.0.0.1:{port}",
            follow_token=tokens["replica"],
            max_lag=2.0,
        )
    )
    address = f"127.0.0.1:{replica.port}"
    try:
        net.wait_for(lambda: health(address) == SERVING, "the replica proven current")
        first.service.stop(grace=0)
        net.wait_for(lambda: health(address) == NOT_SERVING, "the cut-off replica NOT_SERVING")
        assert "not proven current" in (replica.follower.stale() or "")
        again = primary()
        try:
            net.wait_for(lambda: health(address) == SERVING, "current again with the primary back")
            assert replica.follower.stale() is None
        finally:
            again.service.stop(grace=0)
    finally:
        replica.stop(grace=0)
