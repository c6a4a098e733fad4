"""The serving hot path's shortcuts answer exactly what the plain path would.

Tenant lookups are cached until the store's next commit; RPC log lines are written in
groups. Each is checked against its plain equivalent (no timing assertions).
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Running
from hashmatch.client import MD5
from hashmatch.client.errors import Unauthenticated
from hashmatch.server.logs import BufferedStreamHandler, JsonFormatter, direct_json_handler
from hashmatch.server.rpc.auth import TenantCache
from hashmatch.server.rpc.observers import RpcLog
from hashmatch.server.rpc.pipeline import Call
from hashmatch.server.store import Role, Store
from helpers import hashes

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


def test_a_known_token_is_looked_up_for_a_throttled_peer_after_a_commit(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        cache = TenantCache(store)
        token = store.add_tenant("acme", Role.PLATFORM)
        assert cache(token) is not None
        store.add_tenant("other", Role.PLATFORM)  # a commit: the cached generation is gone
        # A throttled peer's calls only look up tokens that authenticated before.
        assert cache(token, cached_only=True) == store.authenticate(token)
        assert cache("hm_guess", cached_only=True) is None
        store.revoke_tokens("acme")
        assert cache(token, cached_only=True) is None  # revoked: refused, and forgotten
        store.add_tenant("third", Role.PLATFORM)
        assert cache(token, cached_only=True) is None
    finally:
        store.close()
