"""`hashmatch serve` in subprocesses: several workers on one port, refusing a taken port,
and draining in-flight calls on SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from hashmatch.client import MD5, Connection, ListClient, RetryPolicy, make_hash
from hashmatch.server.store import Role, Store
from hashmatch.v1 import match_pb2, match_pb2_grpc
from helpers import random_digest, upsert

BIN = Path(sys.executable).parent


@dataclass
class Server:
    proc: subprocess.Popen[str]
    address: str
    log: Path
    tokens: dict[str, str]
    rpc_seen: int = 0

    def log_lines(self) -> list[dict[str, object]]:
        out = []
        text = self.log.read_text(encoding="utf-8")
        # Only whole lines: the server may be midway through writing the last one.
        for line in text[: text.rfind("\n") + 1].splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def rpc_lines(self) -> list[dict[str, object]]:
        return [r for r in self.log_lines() if r.get("msg") == "rpc"]

    def next_rpc_line(self, timeout: float = 10.0) -> dict[str, object]:
        """The RPC line of the call just answered (calls made one at a time)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.rpc_lines()
            if len(lines) > self.rpc_seen or time.monotonic() > deadline:
                assert len(lines) == self.rpc_seen + 1, "expected one new RPC log line"
                self.rpc_seen = len(lines)
                return lines[-1]
            time.sleep(0.01)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def hashmatch() -> str:
    path = shutil.which("hashmatch", path=str(BIN))
    if path is None:
        pytest.skip("hashmatch is not installed in this environment")
    return path


def seed_tenants(data_dir: Path) -> dict[str, str]:
    store = Store(data_dir)
    try:
        return {
            "platform": store.add_tenant("platform", Role.PLATFORM),
            "hotline": store.add_tenant("hotline", Role.HOTLINE),
        }
    finally:
        store.close()


def start_server(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    tokens = seed_tenants(data_dir)
    log = data_dir.parent / f"{data_dir.name}.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [hashmatch(), "serve", "--data-dir", str(data_dir), "--log-format", "json", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **(env or {})},
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("hashmatch serving on "):
        proc.kill()
        pytest.fail(f"server did not start: {line!r}\n{log.read_text()}")
    return Server(proc, line.split()[-1], log, tokens)


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path / "data", "--listen", "127.0.0.1:0", "--workers", "2")
    try:
        yield server
    finally:
        assert server.stop() == 0


def own_channel(address: str) -> grpc.Channel:
    # A channel of its own (no shared subchannel) is a TCP connection of its own, which
    # the kernel hands to one of the workers.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def test_two_workers_both_answer_and_both_see_a_change(two_workers: Server) -> None:
    server = two_workers
    metadata = (("authorization", f"Bearer {server.tokens['platform']}"),)
    rng = random.Random(11)
    value = random_digest(rng, MD5)
    request = match_pb2.MatchRequest(item_id="x", hashes=[make_hash(MD5, value)])
    channels: dict[int, grpc.Channel] = {}  # worker pid -> a connection it serves
    try:
        for _ in range(64):
            channel = own_channel(server.address)
            stub = match_pb2_grpc.MatchServiceStub(channel)
            response = stub.Match(request, metadata=metadata, timeout=10)
            assert response.verdict == match_pb2.VERDICT_NO_MATCH
            # Log lines are written in small groups, within 0.1 s: wait for this call's.
            pid = int(server.next_rpc_line()["pid"])  # type: ignore[call-overload]
            if pid in channels:
                channel.close()
            else:
                channels[pid] = channel
            if len(channels) == 2:
                break
        assert len(channels) == 2, "the kernel never handed a connection to the second worker"

        hotline = ListClient(
            Connection(server=server.address, token=server.tokens["hotline"], retry=RetryPolicy(1))
        )
        with hotline:
            hotline.create_list("iwf")
            hotline.apply_changes("iwf", "b1", [upsert(MD5, value, "R-1")])
        for pid, channel in channels.items():
            stub = match_pb2_grpc.MatchServiceStub(channel)
            deadline = time.monotonic() + 20
            while True:
                response = stub.Match(request, metadata=metadata, timeout=10)
                if response.verdict == match_pb2.VERDICT_MATCH:
                    break
                assert time.monotonic() < deadline, f"worker {pid} never saw the change"
                time.sleep(0.02)
            assert [(r.list, r.reference_id) for r in response.references] == [("iwf", "R-1")]
    finally:
        for channel in channels.values():
            channel.close()


def test_a_second_server_on_a_taken_port_fails_loudly(two_workers: Server, tmp_path: Path) -> None:
    for workers in ("1", "2"):
        result = subprocess.run(
            [
                hashmatch(),
                "serve",
                "--data-dir",
                str(tmp_path / f"other-{workers}"),
                "--listen",
                two_workers.address,
                "--workers",
                workers,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0, workers
        assert "cannot serve on" in result.stderr, result.stderr
        assert "hashmatch serving on" not in result.stdout


def test_single_worker_refuses_a_port_taken_by_workers_and_vice_versa(tmp_path: Path) -> None:
    one = start_server(tmp_path / "one", "--listen", "127.0.0.1:0")
    try:
        result = subprocess.run(
            [
                hashmatch(),
                "serve",
                "--data-dir",
                str(tmp_path / "two"),
                "--workers",
                "2",
                "--listen",
                one.address,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "already in use" in result.stderr
    finally:
        assert one.stop() == 0


def test_sigterm_drains_an_open_stream_and_flushes_statistics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Statistics are flushed only at shutdown here, so the count proves the final flush.
    server = start_server(
        data,
        "--listen",
        "127.0.0.1:0",
        "--grace",
        "30",
        env={"HASHMATCH_STATS_INTERVAL": "3600"},
    )
    value = random_digest(random.Random(3), MD5)
    hotline = ListClient(
        Connection(server=server.address, token=server.tokens["hotline"], retry=RetryPolicy(1))
    )
    with hotline:
        hotline.create_list("iwf")
        hotline.apply_changes("iwf", "b1", [upsert(MD5, value, "R-9")])

    outbox: queue.Queue[match_pb2.MatchRequest | None] = queue.Queue()

    def requests() -> Iterator[match_pb2.MatchRequest]:
        while (item := outbox.get()) is not None:
            yield item

    request = match_pb2.MatchRequest(item_id="in-flight", hashes=[make_hash(MD5, value)])
    metadata = (("authorization", f"Bearer {server.tokens['platform']}"),)
    with grpc.insecure_channel(server.address) as channel:
        responses = match_pb2_grpc.MatchServiceStub(channel).MatchStream(
            requests(), metadata=metadata
        )
        outbox.put(request)
        assert next(responses).verdict == match_pb2.VERDICT_MATCH
        server.proc.send_signal(signal.SIGTERM)
        # Wait until the server is draining: a new call is refused.
        deadline = time.monotonic() + 20
        while True:
            with own_channel(server.address) as fresh:
                try:
                    match_pb2_grpc.MatchServiceStub(fresh).Match(
                        request, metadata=metadata, timeout=2
                    )
                except grpc.RpcError:
                    break
            assert time.monotonic() < deadline, "the server never began draining"
            time.sleep(0.05)
        # The call in flight is still served to its end.
        outbox.put(request)
        assert next(responses).verdict == match_pb2.VERDICT_MATCH
        outbox.put(None)
        assert list(responses) == []
    assert server.proc.wait(timeout=60) == 0

    store = Store(data)
    try:
        meta = store.get_list("iwf")
        assert meta is not None
        counts = store.match_counts(meta.id)
    finally:
        store.close()
    # Two in the stream, plus any probe that reached the server before it began draining.
    assert [ref for ref, _, _ in counts] == ["R-9"]
    assert counts[0][1] >= 2


def worker_pids(server: Server) -> set[int]:
    return {
        int(line["pid"])  # type: ignore[call-overload]
        for line in server.log_lines()
        if str(line.get("msg", "")).startswith("worker ") and "serving" in str(line["msg"])
    }


def gone(pid: int) -> bool:
    """True once the process has exited (a zombie no one reaps yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_workers_exit_with_a_killed_parent_and_free_the_port(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", "--listen", "127.0.0.1:0", "--workers", "2")
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 20
        while len(workers := worker_pids(server)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2, server.log.read_text()
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while not all(gone(pid) for pid in workers):
            assert time.monotonic() < deadline, "orphaned workers kept running"
            time.sleep(0.05)
        # The port is free again: a new server takes it.
        again = subprocess.Popen(
            [
                hashmatch(),
                "serve",
                "--data-dir",
                str(tmp_path / "data"),
                "--listen",
                server.address,
                "--workers",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert again.stdout is not None
        line = again.stdout.readline()
        try:
            assert line == f"hashmatch serving on {server.address}\n", line + (
                again.stderr.read() if again.poll() is not None and again.stderr else ""
            )
        finally:
            again.terminate()
            assert again.wait(timeout=60) == 0
    finally:
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
