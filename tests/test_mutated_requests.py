"""Random and mutated requests to every RPC: a bad request is INVALID_ARGUMENT naming its
field (or some other deliberate refusal), never INTERNAL or UNKNOWN, and the server keeps
serving.

Each method of every hashmatch.v1 service gets a valid request, serialized and then
mutated (bit flips, truncations, unknown fields of every wire type appended at the top
level or inside a sub-message, groups nested and not, spliced and random bytes), sent as
raw bytes with a token of the role the method is for. Seeded, so a failure reproduces.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from conftest import Running
from hashmatch.client import MD5, PDQ, SHA1
from hashmatch.server.app import SERVICES
from hashmatch.v1 import hashes_pb2, lists_pb2, match_pb2, platform_pb2, replication_pb2
from helpers import random_digest, random_pdq, upsert

CASES_PER_METHOD = 300
CONCURRENCY = 16
UNARY_TIMEOUT = 10.0
# Follow-forever streams: a valid request that has nothing to send waits this long.
STREAM_TIMEOUT = 0.5
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
LIST = "fuzz-a"


# -- wire-format helpers ---------------------------------------------------------------


def varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def unknown_field(rng: random.Random, field: int | None = None) -> bytes:
    """One field of a random wire type, groups (nested or not) included."""
    number = field if field is not None else rng.choice([7, 15, 16, 99, 1000, 536_870_911])
    wire = rng.choice(["varint", "i64", "len", "i32", "group", "nested-group"])
    if wire == "varint":
        return key(number, 0) + varint(rng.getrandbits(rng.choice([1, 7, 32, 64])))
    if wire == "i64":
        return key(number, 1) + rng.randbytes(8)
    if wire == "len":
        return key(number, 2) + varint(n := rng.randrange(0, 20)) + rng.randbytes(n)
    if wire == "i32":
        return key(number, 5) + rng.randbytes(4)
    inner = b""
    if wire == "nested-group":
        inner = key(number + 1, 3) + key(2, 0) + varint(5) + key(number + 1, 4)
    inner += key(3, 2) + varint(2) + b"ab" + key(4, 5) + bytes(4)
    return key(number, 3) + inner + key(number, 4)


def top_fields(raw: bytes) -> list[tuple[int, int, int, int]]:
    """(start, end, body start, wire type) of each top-level field; [] if unreadable."""
    out = []
    pos = 0
    try:
        while pos < len(raw):
            start = pos
            k, pos = read_varint(raw, pos)
            wire = k & 7
            body = pos
            if wire == 0:
                _, pos = read_varint(raw, pos)
            elif wire == 1:
                pos += 8
            elif wire == 2:
                n, body = read_varint(raw, pos)
                pos = body + n
            elif wire == 5:
                pos += 4
            else:
                return []
            if pos > len(raw):
                return []
            out.append((start, pos, body, wire))
    except IndexError:
        return []
    return out


def read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def into_submessage(raw: bytes, rng: random.Random) -> bytes:
    """Appends an unknown field inside a length-delimited field (a sub-message, or a
    string, which then holds odd bytes), fixing up its length."""
    candidates = [f for f in top_fields(raw) if f[3] == 2]
    if not candidates:
        return raw + unknown_field(rng)
    start, end, body, _ = rng.choice(candidates)
    k, _ = read_varint(raw, start)
    inner = raw[body:end]
    # One level deeper when the body itself parses as a message.
    deeper = [f for f in top_fields(inner) if f[3] == 2]
    if deeper and rng.random() < 0.5:
        inner = into_submessage(inner, rng)
    else:
        inner = inner + unknown_field(rng)
    return raw[:start] + varint(k) + varint(len(inner)) + inner + raw[end:]


def mutate(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(
        ["flip", "flips", "truncate", "unknown", "known-as-group", "nested", "splice", "random"]
    )
    data = bytearray(raw)
    if kind in ("flip", "flips") and data:
        for _ in range(1 if kind == "flip" else rng.randrange(2, 8)):
            i = rng.randrange(len(data) * 8)
            data[i // 8] ^= 1 << (i % 8)
    elif kind == "truncate" and data:
        del data[rng.randrange(len(data)) :]
    elif kind == "unknown":
        at = rng.choice([f[0] for f in top_fields(raw)] + [len(raw)])
        data[at:at] = unknown_field(rng)
    elif kind == "known-as-group":
        # A field number the message knows, with a wire type it does not expect.
        data += unknown_field(rng, rng.randrange(1, 6))
    elif kind == "nested":
        data = bytearray(into_submessage(raw, rng))
    elif kind == "splice" and data:
        i = rng.randrange(len(data))
        j = rng.randrange(i, len(data) + 1)
        at = rng.randrange(len(data) + 1)
        data[at:at] = data[i:j]
    else:
        kind = "random"
        data = bytearray(rng.randbytes(rng.randrange(0, 64)))
    return kind, bytes(data)


# -- valid requests per method ---------------------------------------------------------


def valid_requests(rng: random.Random) -> dict[str, Message]:
    md5 = hashes_pb2.Hash(algorithm=MD5, value=random_digest(rng, MD5))  # type: ignore[arg-type]
    sha1 = hashes_pb2.Hash(algorithm=SHA1, value=random_digest(rng, SHA1))  # type: ignore[arg-type]
    pdq = hashes_pb2.Hash(algorithm=PDQ, value=random_pdq(rng), quality=90)  # type: ignore[arg-type]
    item = match_pb2.MatchRequest(item_id="item-1", hashes=[md5, pdq])
    batch = lists_pb2.ApplyChangesRequest(
        list=LIST,
        batch_id="fuzz-batch",
        upserts=[
            lists_pb2.Entry(hash=md5, reference_id="R-1"),
            lists_pb2.Entry(hash=pdq, reference_id="R-2"),
        ],
        retirements=[sha1],
        expected_version=1,
    )
    flood = lists_pb2.FloodPolicy(factor=10, min_matches=20, window_seconds=60)
    return {
        "MatchService/Match": item,
        "MatchService/MatchBatch": match_pb2.MatchBatchRequest(items=[item, item]),
        "MatchService/MatchStream": item,
        "ListService/CreateList": lists_pb2.CreateListRequest(
            name="fuzz-new", pdq_threshold=20, pdq_min_quality=60, flood=flood
        ),
        "ListService/GetList": lists_pb2.GetListRequest(name=LIST),
        "ListService/ApplyChanges": batch,
        "ListService/UploadChanges": batch,
        "ListService/WatchChanges": lists_pb2.WatchChangesRequest(list=LIST, since_version=0),
        "ListService/GetReferenceStats": lists_pb2.GetReferenceStatsRequest(list=LIST, limit=5),
        "ListService/GetFeedback": lists_pb2.GetFeedbackRequest(list=LIST, limit=5),
        "ListService/ListQuarantine": lists_pb2.ListQuarantineRequest(list=LIST),
        "ListService/ReleaseQuarantine": lists_pb2.ReleaseQuarantineRequest(
            list=LIST, reference_ids=["R-1", "R-2"]
        ),
        "ListService/UpdateList": lists_pb2.UpdateListRequest(name=LIST, flood=flood),
        "ReplicationService/Follow": replication_pb2.FollowRequest(
            positions=[replication_pb2.ListPosition(list=LIST, version=1)]
        ),
        "PlatformService/ReportFalsePositive": platform_pb2.ReportFalsePositiveRequest(
            list=LIST, reference_id="R-1", reason=lists_pb2.FEEDBACK_REASON_BENIGN, note="n"
        ),
        "PlatformService/SetSubscriptions": platform_pb2.SetSubscriptionsRequest(lists=[LIST]),
        "PlatformService/UpdateAllowList": platform_pb2.UpdateAllowListRequest(
            add=[md5], remove=[sha1]
        ),
        # The grants of ListService, when the contract has them.
        "ListService/GrantAccess": _maybe("GrantAccessRequest", list=LIST, tenant="hotline-b"),
        "ListService/RevokeAccess": _maybe("RevokeAccessRequest", list=LIST, tenant="hotline-b"),
        "ListService/ListGrants": _maybe("ListGrantsRequest", list=LIST),
    }


def _maybe(name: str, **fields: object) -> Message:
    cls = getattr(lists_pb2, name, None)
    return cls(**fields) if cls is not None else lists_pb2.ListListsRequest()


ROLE_OF_SERVICE = {
    "MatchService": "platform",
    "ListService": "hotline-a",
    "ReplicationService": "replica",
    "PlatformService": "platform",
}


@dataclass
class Outcome:
    method: str
    kind: str
    raw: bytes
    code: grpc.StatusCode
    details: str


def every_method() -> list[tuple[str, MethodDescriptor]]:
    return [(f"{s.name}/{m.name}", m) for s in SERVICES for m in s.methods]


async def send(
    channel: grpc.aio.Channel, method: MethodDescriptor, messages: list[bytes], token: str
) -> tuple[grpc.StatusCode, str]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {token}"),)
    streaming = method.client_streaming or method.server_streaming
    timeout = STREAM_TIMEOUT if method.server_streaming else UNARY_TIMEOUT
    try:
        if not streaming:
            await channel.unary_unary(path)(messages[0], metadata=metadata, timeout=timeout)
        elif method.client_streaming and not method.server_streaming:
            await channel.stream_unary(path)(iter(messages), metadata=metadata, timeout=timeout)
        else:
            if method.client_streaming:
                call = channel.stream_stream(path)(
                    iter(messages), metadata=metadata, timeout=timeout
                )
            else:
                call = channel.unary_stream(path)(messages[0], metadata=metadata, timeout=timeout)
            async for _ in call:
                # A follow-forever stream answered: that is all this test needs of it.
                call.cancel()
                break
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    except asyncio.CancelledError:
        return grpc.StatusCode.OK, ""
    return grpc.StatusCode.OK, ""


def prepare(running: Running) -> None:
    rng = random.Random(7)
    lists = running.lists("hotline-a")
    lists.create_list(LIST)
    lists.apply_changes(LIST, "seed", [upsert(MD5, random_digest(rng, MD5), "R-0")])
    running.lists("hotline-b").create_list("fuzz-b")


def run_cases(
    running: Running,
    methods: list[tuple[str, MethodDescriptor]],
    cases: Callable[[str, MethodDescriptor, random.Random], list[tuple[str, list[bytes]]]],
) -> tuple[int, list[Outcome], dict[grpc.StatusCode, int]]:
    async def main() -> tuple[int, list[Outcome], dict[grpc.StatusCode, int]]:
        bad: list[Outcome] = []
        codes: dict[grpc.StatusCode, int] = {}
        total = 0
        gate = asyncio.Semaphore(CONCURRENCY)
        async with grpc.aio.insecure_channel(running.address) as channel:

            async def one(label: str, m: MethodDescriptor, kind: str, msgs: list[bytes]) -> None:
                token = running.tokens[ROLE_OF_SERVICE[m.containing_service.name]]
                async with gate:
                    code, details = await send(channel, m, msgs, token)
                codes[code] = codes.get(code, 0) + 1
                if code in FORBIDDEN:
                    bad.append(Outcome(label, kind, b"".join(msgs), code, details))

            tasks = []
            for label, m in methods:
                rng = random.Random(f"{label}-seed")
                for kind, msgs in cases(label, m, rng):
                    tasks.append(one(label, m, kind, msgs))
            total = len(tasks)
            await asyncio.gather(*tasks)
        return total, bad, codes

    return asyncio.run(main())


def mutated_cases(
    label: str, method: MethodDescriptor, rng: random.Random
) -> list[tuple[str, list[bytes]]]:
    valid = valid_requests(random.Random(1)).get(label)
    if valid is None or valid.DESCRIPTOR.full_name != method.input_type.full_name:
        valid = message_factory.GetMessageClass(method.input_type)()
    raw = valid.SerializeToString()
    out = []
    for _ in range(CASES_PER_METHOD):
        if method.client_streaming:
            msgs = []
            kinds = []
            for _ in range(rng.randrange(1, 4)):
                kind, data = mutate(raw, rng) if rng.random() < 0.8 else ("valid", raw)
                kinds.append(kind)
                msgs.append(data)
            out.append(("+".join(kinds), msgs))
        else:
            kind, data = mutate(raw, rng)
            out.append((kind, [data]))
    return out


def still_serving(running: Running) -> None:
    assert running.lists("hotline-a").get_list(LIST).name == LIST
    assert not running.matcher().match([hashes_pb2.Hash(algorithm=MD5, value=bytes(16))]).matched  # type: ignore[arg-type]


# -- the tests -------------------------------------------------------------------------


def test_every_method_answers_mutated_requests_without_internal(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    prepare(running)
    methods = every_method()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="hashmatch.server.rpc.pipeline"):
        total, bad, codes = run_cases(running, methods, mutated_cases)
    elapsed = time.monotonic() - started
    # Nor did the server meet anything it did not expect (an INTERNAL the client may not
    # see, e.g. on a stream it cancelled).
    unexpected = sorted(
        {
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith("hashmatch")
        }
    )
    assert not unexpected, unexpected
    assert total == CASES_PER_METHOD * len(methods)
    summary = "\n".join(
        f"{o.method} [{o.kind}] {o.code.name}: {o.details} raw={o.raw.hex()}" for o in bad[:20]
    )
    assert not bad, f"{len(bad)} of {total} mutated requests got INTERNAL/UNKNOWN:\n{summary}"
    # Bad requests were refused as such, not some other way.
    assert codes.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0, codes
    still_serving(running)
    print(f"{total} mutated requests in {elapsed:.1f} s: {codes}")


def raw_call(running: Running, path: str, raw: bytes, role: str) -> grpc.RpcError | bytes:
    metadata = (("authorization", f"Bearer {running.tokens[role]}"),)
    with grpc.insecure_channel(running.address) as channel:
        try:
            return channel.unary_unary(path)(raw, metadata=metadata, timeout=5)  # type: ignore[no-any-return]
        except grpc.RpcError as exc:
            return exc


def test_empty_list_names_are_invalid_argument_naming_the_field(running: Running) -> None:
    prepare(running)
    got = raw_call(
        running,
        "/hashmatch.v1.ListService/GetList",
        lists_pb2.GetListRequest(name="").SerializeToString(),
        "hotline-a",
    )
    assert isinstance(got, grpc.RpcError)
    assert got.code() == grpc.StatusCode.INVALID_ARGUMENT, got.details()
    assert "name" in got.details()
    metadata = (("authorization", f"Bearer {running.tokens['hotline-a']}"),)
    with grpc.insecure_channel(running.address) as channel:
        stream = channel.unary_stream("/hashmatch.v1.ListService/WatchChanges")(
            lists_pb2.WatchChangesRequest(list="").SerializeToString(),
            metadata=metadata,
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as err:
            list(stream)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "list" in err.value.details()


@pytest.mark.parametrize("nested", [False, True])
def test_unknown_groups_in_a_batch_are_skipped_as_protobuf_does(
    running: Running, nested: bool
) -> None:
    prepare(running)
    rng = random.Random(3)
    value = random_digest(rng, MD5)
    entry = lists_pb2.Entry(
        hash=hashes_pb2.Hash(algorithm=MD5, value=value),  # type: ignore[arg-type]
        reference_id="G-1",
    ).SerializeToString()
    group = key(99, 3) + key(100, 3) + key(1, 0) + varint(1) + key(100, 4) + key(99, 4)
    if nested:
        entry += group  # inside the Entry message
    raw = (
        lists_pb2.ApplyChangesRequest(list=LIST, batch_id="with-group").SerializeToString()
        + key(3, 2)
        + varint(len(entry))
        + entry
        + (b"" if nested else group)
    )
    # protobuf itself reads it, groups skipped:
    parsed = lists_pb2.ApplyChangesRequest.FromString(raw)
    assert parsed.upserts[0].reference_id == "G-1"
    answer = raw_call(running, "/hashmatch.v1.ListService/ApplyChanges", raw, "hotline-a")
    assert isinstance(answer, bytes), (answer.code(), answer.details())  # type: ignore[union-attr]
    assert lists_pb2.ApplyChangesResponse.FromString(answer).upserted == 1
    # And in an upload.
    metadata = (("authorization", f"Bearer {running.tokens['hotline-a']}"),)
    again = raw.replace(b"with-group", b"with-grou2")
    with grpc.insecure_channel(running.address) as channel:
        summary = lists_pb2.UploadChangesResponse.FromString(
            channel.stream_unary("/hashmatch.v1.ListService/UploadChanges")(
                iter([again]), metadata=metadata, timeout=5
            )
        )
    assert summary.batches_applied == 1


def test_a_malformed_group_is_invalid_argument(running: Running) -> None:
    prepare(running)
    head = lists_pb2.ApplyChangesRequest(list=LIST, batch_id="b").SerializeToString()
    for tail in (key(99, 3), key(99, 3) + key(98, 4), key(99, 4), key(7, 6)):
        got = raw_call(running, "/hashmatch.v1.ListService/ApplyChanges", head + tail, "hotline-a")
        assert isinstance(got, grpc.RpcError)
        assert got.code() == grpc.StatusCode.INVALID_ARGUMENT, (tail.hex(), got.details())


def test_the_core_reads_what_protobuf_reads() -> None:
    """parse_changes against the protobuf runtime on mutated requests: whatever protobuf
    reads, the core reads the same way (unknown fields and groups skipped); whatever it
    cannot read, the core refuses or reads, never crashes."""
    from google.protobuf.message import DecodeError

    from hashmatch.server.core import parse_changes

    raw = valid_requests(random.Random(1))["ListService/ApplyChanges"].SerializeToString()
    rng = random.Random(11)
    agreed = refused = 0
    for _ in range(5000):
        _, data = mutate(raw, rng)
        try:
            want = lists_pb2.ApplyChangesRequest.FromString(data)
        except DecodeError:
            want = None
        try:
            got = parse_changes(data, 50)
        except ValueError as exc:
            assert want is None, f"protobuf reads {data.hex()}, the core refused: {exc}"
            refused += 1
            continue
        if want is not None:
            assert (got.list, got.batch_id) == (want.list, want.batch_id), data.hex()
            assert (got.n_upserts, got.n_retirements) == (
                len(want.upserts),
                len(want.retirements),
            ), data.hex()
            assert got.expected_version == (
                want.expected_version if want.HasField("expected_version") else None
            ), data.hex()
            agreed += 1
    assert agreed > 1000 and refused > 100, (agreed, refused)
    print(f"{agreed} read alike, {refused} refused by both")
