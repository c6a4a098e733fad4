"""No client can stall the service: idle streams cost no thread, admission is per tenant,
idle client streams end, failed tokens are throttled per peer, every refusal has a status."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hashmatch.client import MD5, make_hash
from hashmatch.server import errors
from hashmatch.server.app import Service, build
from hashmatch.server.rpc import status
from hashmatch.server.rpc.limits import SHED_MIN_CALLS, Admission, LoadShedder
from hashmatch.server.settings import Settings
from hashmatch.server.store import Role
from hashmatch.v1 import (
    hashes_pb2,
    lists_pb2,
    lists_pb2_grpc,
    match_pb2,
    match_pb2_grpc,
)

# More idle streams of each kind than the old server had handler threads (16).
IDLE_PER_KIND = 24


class Server:
    def __init__(self, tmp_path: Path, **overrides: object) -> None:
        settings = Settings(data_dir=tmp_path, listen="127.0.0.1:0", poll_interval=0.01)
        self.service: Service = build(replace(settings, **overrides))  # type: ignore[arg-type]
        store = self.service.store
        self.tokens = {
            "idler": store.add_tenant("idler", Role.PLATFORM),
            "hotline": store.add_tenant("hotline", Role.HOTLINE),
            "other": store.add_tenant("other", Role.PLATFORM),
        }
        store.create_list("iwf", "hotline", pdq_threshold=31, pdq_min_quality=50)
        self.service.follower.catch_up()
        self.channels: list[grpc.Channel] = []

    def channel(self) -> grpc.Channel:
        # A channel per stream owner, so one client's streams share no connection with
        # the tenant whose calls are measured.
        channel = grpc.insecure_channel(
            f"127.0.0.1:{self.service.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.channels.append(channel)
        return channel

    def metadata(self, tenant: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[tenant]}"),)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        self.service.stop(grace=0)


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    s = Server(tmp_path, **getattr(request, "param", {}))
    yield s
    s.close()


def item(i: int = 0) -> match_pb2.MatchRequest:
    return match_pb2.MatchRequest(item_id=f"i{i}", hashes=[make_hash(MD5, bytes(16))])


def reason(error: grpc.RpcError) -> str:
    found = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert found is not None
    for detail in found.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


class Idle:
    """A client stream that sends nothing until released."""

    def __init__(self) -> None:
        self.gate: queue.Queue[None] = queue.Queue()

    def requests(self) -> Iterator[object]:
        self.gate.get()
        return
        yield  # an empty generator that blocks first

    def release(self) -> None:
        self.gate.put(None)


def test_idle_streams_of_every_kind_leave_other_tenants_served(server: Server) -> None:
    idle: list[Idle] = []
    calls: list[grpc.Future | grpc.RpcError | object] = []
    match = match_pb2_grpc.MatchServiceStub(server.channel())
    lists = lists_pb2_grpc.ListServiceStub(server.channel())
    try:
        for _ in range(IDLE_PER_KIND):
            stream = Idle()
            idle.append(stream)
            calls.append(match.MatchStream(stream.requests(), metadata=server.metadata("idler")))
            upload = Idle()
            idle.append(upload)
            calls.append(
                lists.UploadChanges.future(upload.requests(), metadata=server.metadata("hotline"))
            )
            calls.append(
                lists.WatchChanges(
                    lists_pb2.WatchChangesRequest(list="iwf"), metadata=server.metadata("hotline")
                )
            )
        # Every idle stream is open on the server before the other tenant calls.
        watch = lists.WatchChanges(
            lists_pb2.WatchChangesRequest(list="iwf"), metadata=server.metadata("hotline")
        )
        calls.append(watch)
        other = match_pb2_grpc.MatchServiceStub(server.channel())
        for i in range(20):
            answer = other.Match(item(i), metadata=server.metadata("other"), timeout=5)
            assert answer.verdict == match_pb2.VERDICT_NO_MATCH
        batch = other.MatchBatch(
            match_pb2.MatchBatchRequest(items=[item(i) for i in range(10)]),
            metadata=server.metadata("other"),
            timeout=5,
        )
        assert len(batch.results) == 10
        # The hotline is served too, beside its own idle streams.
        lists.ApplyChanges(
            lists_pb2.ApplyChangesRequest(
                list="iwf",
                batch_id="b1",
                upserts=[lists_pb2.Entry(hash=make_hash(MD5, b"\x01" * 16), reference_id="R1")],
            ),
            metadata=server.metadata("hotline"),
            timeout=5,
        )
        # A watcher that was idle wakes up for the new batch.
        assert next(watch).version == 1
    finally:
        for stream in idle:
            stream.release()
        for call in calls:
            if isinstance(call, grpc.Call):
                call.cancel()


@pytest.mark.parametrize("server", [{"stream_idle_timeout": 0.3}], indirect=True)
def test_a_client_stream_that_sends_nothing_is_ended(server: Server) -> None:
    match = match_pb2_grpc.MatchServiceStub(server.channel())
    stream = Idle()
    try:
        responses = match.MatchStream(stream.requests(), metadata=server.metadata("idler"))
        with pytest.raises(grpc.RpcError) as info:
            next(responses)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert reason(info.value) == "ERROR_REASON_STREAM_IDLE"
    finally:
        stream.release()


@pytest.mark.parametrize("server", [{"max_tenant_streams": 3}], indirect=True)
def test_one_tenant_at_its_share_does_not_refuse_another(server: Server) -> None:
    match = match_pb2_grpc.MatchServiceStub(server.channel())
    held = [Idle() for _ in range(3)]
    streams = [match.MatchStream(s.requests(), metadata=server.metadata("idler")) for s in held]
    try:
        # The server has taken all three before the fourth is tried.
        for s in streams:
            assert s.is_active()
        probe = match_pb2_grpc.MatchServiceStub(server.channel())
        # Admission is checked when a call starts: wait (up to 20 s on a loaded machine)
        # until the server has started the three.
        for _ in range(400):
            refused = probe.MatchStream(iter([item()]), metadata=server.metadata("idler"))
            try:
                list(refused)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert reason(exc) == "ERROR_REASON_OVERLOADED"
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("a fourth stream of the tenant was admitted")
        other = match_pb2_grpc.MatchServiceStub(server.channel())
        answers = list(
            other.MatchStream(iter([item(1), item(2)]), metadata=server.metadata("other"))
        )
        assert [a.item_id for a in answers] == ["i1", "i2"]
    finally:
        for s in held:
            s.release()
        for call in streams:
            call.cancel()


def test_admission_counts_per_tenant_and_frees_slots() -> None:
    admission = Admission(max_calls=4, tenant_share=0.5, max_streams=3, max_tenant_streams=2)
    admission.enter("a", stream=False)
    admission.enter("a", stream=False)
    with pytest.raises(errors.Overloaded):
        admission.enter("a", stream=False)  # a's share: 2 of 4
    admission.enter("b", stream=False)
    admission.enter("b", stream=False)
    with pytest.raises(errors.Overloaded):
        admission.enter("c", stream=False)  # the process is full
    admission.leave("a", stream=False)
    admission.enter("c", stream=False)
    admission.enter("a", stream=True)
    admission.enter("a", stream=True)
    with pytest.raises(errors.Overloaded):
        admission.enter("a", stream=True)
    admission.enter("b", stream=True)
    with pytest.raises(errors.Overloaded):
        admission.enter("c", stream=True)
    for tenant in ("a", "a", "b"):
        admission.leave(tenant, stream=True)
    assert admission.streams == 0 and admission.calls == 4


def _subclasses(cls: type[errors.Refusal]) -> set[type[errors.Refusal]]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_subclasses(sub)}
    return out


def test_every_refusal_has_a_status_code_and_a_reason() -> None:
    refusals = _subclasses(errors.Refusal)
    assert len(refusals) >= 15
    for cls in refusals:
        code, error_reason = status.code_and_reason(cls.__new__(cls))
        assert code not in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        assert hashes_pb2.ErrorReason.Name(error_reason)
    assert set(status.TABLE) <= refusals


def test_a_refusal_becomes_a_rich_status() -> None:
    refusal = errors.invalid([errors.Violation("items[2].item_id", "is required")])
    found = status.to_status(refusal)
    assert found.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "items[2].item_id" in found.message
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in found.details)
    assert bad.field_violations[0].field == "items[2].item_id"
    paused = status.to_status(errors.ProbeThrottled("paused", retry_after=2.5))
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in paused.details)
    assert retry.retry_delay.ToMilliseconds() == 2500


def test_a_peer_guessing_tokens_is_throttled_but_known_tokens_still_work(server: Server) -> None:
    stub = match_pb2_grpc.MatchServiceStub(server.channel())
    # A known token used once is cached: it keeps working from a throttled address.
    assert stub.Match(item(), metadata=server.metadata("other"), timeout=5).verdict
    messages = set()
    for i in range(200):
        with pytest.raises(grpc.RpcError) as info:
            stub.Match(item(), metadata=(("authorization", f"Bearer hm_guess_{i}"),), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        messages.add(info.value.details())
    assert any("too many failed authentications" in (m or "") for m in messages)
    assert stub.Match(item(), metadata=server.metadata("other"), timeout=5).verdict


def test_while_the_loop_falls_behind_the_heaviest_tenant_is_shed_first() -> None:
    now = [100.0]
    shedder = LoadShedder(clock=lambda: now[0])
    for _ in range(SHED_MIN_CALLS):
        shedder.admit("heavy")  # no lag: nothing is shed
    shedder.admit("light")
    shedder.until = now[0] + 1.0  # the probe saw the loop fall behind
    with pytest.raises(errors.Overloaded) as info:
        shedder.admit("heavy")
    assert info.value.retry_after is not None and info.value.retry_after > 0
    shedder.admit("light")  # under its even share of this second's calls: answered
    now[0] += 2.0  # lag gone: everyone is answered again
    shedder.admit("heavy")


def test_overload_is_measured_as_sustained_event_loop_lag() -> None:
    async def run() -> float:
        shedder = LoadShedder()
        task = asyncio.get_running_loop().create_task(shedder.watch())
        await asyncio.sleep(0.05)
        assert shedder.until == 0.0  # an idle loop is not behind
        for _ in range(12):  # the loop blocked again and again, as under a backlog
            time.sleep(0.06)
            await asyncio.sleep(0.001)
        task.cancel()
        return shedder.until

    assert asyncio.run(run()) > 0.0
