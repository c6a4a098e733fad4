"""The serving hot path's shortcuts answer exactly what the plain path would.

Tenant lookups are cached until the store's next commit; match responses are encoded
directly; RPC log lines are written in groups; the deadline reaper lets go of finished
calls. Each is checked against its plain equivalent (no timing assertions).
"""

from __future__ import annotations

import io
import json
import logging
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from conftest import Running
from hashmatch.client import MD5, PDQ, SHA256, make_hash
from hashmatch.client.errors import Unauthenticated
from hashmatch.server import match_service
from hashmatch.server.auth import TenantCache
from hashmatch.server.errors import Violation
from hashmatch.server.handlers import Call
from hashmatch.server.limits import DeadlineReaper
from hashmatch.server.logs import BufferedStreamHandler, JsonFormatter, direct_json_handler
from hashmatch.server.observers import RpcLog
from hashmatch.server.store import Role, Store
from hashmatch.v1 import hashes_pb2, match_pb2, match_pb2_grpc
from helpers import hashes, random_digest, random_pdq, upsert

# -- tenant cache -------------------------------------------------------------------------


def test_cache_answers_like_the_store_and_sees_revocation_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        cache = TenantCache(store)
        token = store.add_tenant("acme", Role.PLATFORM)
        first = cache(token)
        assert first == store.authenticate(token) and first is not None
        assert cache(token) is first  # served from the cache while nothing is committed
        assert cache("hm_unknown") is None
        store.revoke_tokens("acme")
        assert cache(token) is None  # the very next lookup
        again = store.issue_token("acme")
        assert cache(again) == store.authenticate(again)
    finally:
        store.close()


def test_cache_sees_a_revocation_committed_by_another_process(tmp_path: Path) -> None:
    serving = Store(tmp_path)
    try:
        token = serving.add_tenant("acme", Role.PLATFORM)
        cache = TenantCache(serving)
        assert cache(token) is not None
        # What `hashmatch admin revoke-tokens` does: another process, the same LMDB files.
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from hashmatch.server.store import Store;"
                "s = Store(Path(sys.argv[1])); s.revoke_tokens('acme'); s.close()",
                str(tmp_path),
            ],
            check=True,
        )
        assert cache(token) is None
    finally:
        serving.close()


def test_cache_keeps_no_unknown_tokens_and_is_bounded(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        cache = TenantCache(store, max_cached=2)
        tokens = [store.add_tenant(f"t{i}", Role.PLATFORM) for i in range(4)]
        for _ in range(100):
            assert cache(f"hm_guess_{_}") is None
        for token in tokens:
            assert cache(token) is not None
        assert len(cache._generation[1]) == 2
        # Tokens themselves are not kept, only their hashes.
        assert not any(token.encode() in key for key in cache._generation[1] for token in tokens)
    finally:
        store.close()


def test_server_refuses_a_revoked_token_on_the_next_call(running: Running) -> None:
    client = running.matcher()
    assert not client.match(hashes((MD5, bytes(16)))).matched
    running.service.store.revoke_tokens("platform")
    with pytest.raises(Unauthenticated):
        client.match(hashes((MD5, bytes(16))))


# -- encoded responses ----------------------------------------------------------------------

ITEM_IDS = ["", "a", "upload-123", "x" * 64, "é" * 64, "ü" * 128, "漢字" * 42, "z" * 256]


@pytest.mark.parametrize("item_id", ITEM_IDS)
def test_no_match_bytes_are_the_protobuf_encoding(item_id: str) -> None:
    expected = match_pb2.MatchResponse(item_id=item_id, verdict=match_pb2.VERDICT_NO_MATCH)
    assert match_service._no_match(item_id) == expected.SerializeToString()


def test_batch_bytes_are_the_protobuf_encoding() -> None:
    ref = match_pb2.Reference(list="iwf", reference_id="R-1", list_version=3)
    refs = [[] for _ in ITEM_IDS]
    refs[2] = [ref]
    errors = {4: match_service._failed(ITEM_IDS[4], [Violation("items[4].hashes", "bad")])}
    encoded = match_service._batch_response(ITEM_IDS, refs, errors)
    expected = []
    for i, item_id in enumerate(ITEM_IDS):
        if i == 2:
            expected.append(
                match_pb2.MatchResponse(
                    item_id=item_id, verdict=match_pb2.VERDICT_MATCH, references=[ref]
                )
            )
        elif i == 4:
            expected.append(match_pb2.MatchResponse.FromString(errors[4]))
        else:
            expected.append(
                match_pb2.MatchResponse(item_id=item_id, verdict=match_pb2.VERDICT_NO_MATCH)
            )
    assert encoded == match_pb2.MatchBatchResponse(results=expected).SerializeToString()


def test_batch_mixes_quick_and_full_checks_in_order(running: Running) -> None:
    rng = random.Random(3)
    md5, sha, pdq = random_digest(rng, MD5), random_digest(rng, SHA256), random_pdq(rng)
    running.lists().create_list("iwf")
    running.lists().apply_changes(
        "iwf",
        "b1",
        [upsert(MD5, md5, "R-md5"), upsert(SHA256, sha, "R-sha"), upsert(PDQ, pdq, "R-pdq")],
    )
    items: list[tuple[str, list[hashes_pb2.Hash]]] = [
        ("plain", hashes((MD5, md5))),
        ("long-" + "é" * 70, hashes((SHA256, sha))),  # past the quick check's ID length
        ("two", [make_hash(MD5, bytes(16)), make_hash(PDQ, pdq, 90)]),
        ("bad-length", hashes((MD5, bytes(15)))),
        ("bad-second", [make_hash(MD5, md5), make_hash(SHA256, bytes(3))]),
        ("quality-on-md5", [make_hash(MD5, md5, 50)]),
        ("blank-pdq", [make_hash(PDQ, bytes(32), 100)]),
        ("", hashes((MD5, random_digest(rng, MD5)))),
    ]
    results = running.matcher().match_batch(items)
    assert [r.item_id for r in results] == [item_id for item_id, _ in items]
    assert [r.matched for r in results] == [True, True, True, False, False, False, False, False]
    assert [r.error is not None for r in results] == [
        False,
        False,
        False,
        True,
        True,
        True,
        False,
        False,
    ]
    assert [ref.reference_id for ref in results[2].references] == ["R-pdq"]


def test_stream_answers_encoded_responses_in_order(running: Running) -> None:
    rng = random.Random(4)
    listed = random_digest(rng, MD5)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(MD5, listed, "R-1")])
    requests = [
        match_pb2.MatchRequest(item_id="a", hashes=hashes((MD5, listed))),
        match_pb2.MatchRequest(item_id="b", hashes=hashes((MD5, bytes(4)))),
        match_pb2.MatchRequest(item_id="c", hashes=hashes((MD5, random_digest(rng, MD5)))),
    ]
    with grpc.insecure_channel(running.address) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        metadata = (("authorization", f"Bearer {running.tokens['platform']}"),)
        answers = list(stub.MatchStream(iter(requests), metadata=metadata, timeout=10))
    assert [a.item_id for a in answers] == ["a", "b", "c"]
    assert [a.verdict for a in answers] == [
        match_pb2.VERDICT_MATCH,
        match_pb2.VERDICT_UNSPECIFIED,
        match_pb2.VERDICT_NO_MATCH,
    ]
    assert answers[1].HasField("error")


# -- grouped log lines ------------------------------------------------------------------------


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("hashmatch.rpc", level, __file__, 0, msg, None, None)


def test_buffered_handler_writes_every_line_in_order() -> None:
    out = io.StringIO()
    handler = BufferedStreamHandler(out, interval=3600)  # only explicit flushes
    handler.setFormatter(JsonFormatter())
    try:
        for i in range(5):
            handler.handle(_record(logging.INFO, f"line {i}"))
        assert out.getvalue() == ""  # grouped, not yet written
        handler.handle(_record(logging.WARNING, "warn"))  # warnings go out at once
        lines = out.getvalue().splitlines()
        assert [line.split('"msg":"')[1].split('"')[0] for line in lines] == [
            *(f"line {i}" for i in range(5)),
            "warn",
        ]
        handler.handle(_record(logging.INFO, "last"))
    finally:
        handler.close()
    assert out.getvalue().splitlines()[-1].count('"msg":"last"') == 1


def test_buffered_handler_flushes_by_itself() -> None:
    out = io.StringIO()
    handler = BufferedStreamHandler(out, interval=0.01)
    try:
        handler.handle(_record(logging.INFO, "soon"))
        deadline = time.monotonic() + 10
        while "soon" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "soon" in out.getvalue()
    finally:
        handler.close()


# -- deadline reaper ----------------------------------------------------------------------


class _Context:
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


def test_reaper_cancels_late_calls_and_lets_go_of_finished_ones() -> None:
    reaper = DeadlineReaper()
    try:
        done, late = _Context(), _Context()
        ticket = reaper.register(time.monotonic() + 3600, done)  # type: ignore[arg-type]
        reaper.done(ticket)
        assert ticket not in reaper._live  # its context is not kept until the deadline
        reaper.register(time.monotonic() + 0.01, late)  # type: ignore[arg-type]
        assert late.cancelled.wait(10)
        assert not done.cancelled.is_set()
    finally:
        reaper.stop()


def _rpc_line(add_filter: bool) -> dict[str, object]:
    out = io.StringIO()
    handler = BufferedStreamHandler(out, interval=3600)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"hashmatch-test.rpc.{add_filter}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    if add_filter:  # any filter sends the line through the logging machinery
        logger.addFilter(lambda record: True)
    assert (direct_json_handler(logger) is None) == add_filter
    try:
        call = Call("MatchService/Match", 0.0, "ipv4:127.0.0.1:1", "acme", 1)
        call.duration = 0.0012345
        RpcLog(logger)(call)
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    line: dict[str, object] = json.loads(out.getvalue())
    return line


def test_direct_rpc_line_equals_the_logging_machinerys() -> None:
    direct, generic = _rpc_line(False), _rpc_line(True)
    for line in (direct, generic):
        del line["ts"]
        del line["logger"]
    assert list(direct.items()) == list(generic.items())
    assert direct["msg"] == "rpc" and direct["duration_ms"] == 1.234
