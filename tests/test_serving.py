"""MatchStream, match statistics and the settings loader, against the real server."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from conftest import Running
from hashmatch.client import MD5, SHA256, AsyncMatchClient, make_hash
from hashmatch.server.settings import Settings, SettingsError, TenantLimit
from hashmatch.v1 import match_pb2, match_pb2_grpc
from helpers import random_digest, upsert


def stub(running: Running) -> tuple[grpc.Channel, match_pb2_grpc.MatchServiceStub]:
    channel = grpc.insecure_channel(running.address)
    return channel, match_pb2_grpc.MatchServiceStub(channel)


def bearer(running: Running, tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {running.tokens[tenant]}"),)


def items(listed: bytes, n: int, rng: random.Random) -> Iterator[match_pb2.MatchRequest]:
    for i in range(n):
        value = listed if i % 3 == 0 else random_digest(rng, MD5)
        yield match_pb2.MatchRequest(item_id=f"u{i}", hashes=[make_hash(MD5, value)])


def test_match_stream_answers_each_request_in_order(running: Running) -> None:
    rng = random.Random(5)
    listed = random_digest(rng, MD5)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(MD5, listed, "R-1")])
    channel, match = stub(running)
    with channel:
        responses = list(
            match.MatchStream(items(listed, 30, rng), metadata=bearer(running, "platform"))
        )
    assert [r.item_id for r in responses] == [f"u{i}" for i in range(30)]
    for i, r in enumerate(responses):
        expected = match_pb2.VERDICT_MATCH if i % 3 == 0 else match_pb2.VERDICT_NO_MATCH
        assert r.verdict == expected
        assert [(x.list, x.reference_id) for x in r.references] == (
            [("iwf", "R-1")] if i % 3 == 0 else []
        )


def test_match_stream_invalid_item_gets_its_own_error(running: Running) -> None:
    good = match_pb2.MatchRequest(item_id="a", hashes=[make_hash(SHA256, bytes(32))])
    bad = match_pb2.MatchRequest(item_id="b", hashes=[make_hash(MD5, bytes(5))])
    channel, match = stub(running)
    with channel:
        responses = list(
            match.MatchStream(iter([good, bad, good]), metadata=bearer(running, "platform"))
        )
    assert [r.item_id for r in responses] == ["a", "b", "a"]
    assert not responses[0].HasField("error") and not responses[2].HasField("error")
    assert responses[1].verdict == match_pb2.VERDICT_UNSPECIFIED
    assert responses[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in responses[1].error.details)
    assert bad_request.field_violations[0].field == "hashes[0].value"


def test_match_stream_bad_utf8_item_id_gets_its_own_error(running: Running) -> None:
    good = match_pb2.MatchRequest(item_id="a", hashes=[make_hash(MD5, bytes(16))])
    # Field 1 (item_id), length 2, invalid UTF-8.
    raw_bad = b"\x0a\x02\xff\xfe"
    channel = grpc.insecure_channel(running.address)
    with channel:
        call = channel.stream_stream(
            "/hashmatch.v1.MatchService/MatchStream",
            request_serializer=lambda b: b,
            response_deserializer=match_pb2.MatchResponse.FromString,
        )
        responses = list(
            call(
                iter([good.SerializeToString(), raw_bad, good.SerializeToString()]),
                metadata=bearer(running, "platform"),
            )
        )
    assert [r.HasField("error") for r in responses] == [False, True, False]
    assert "item_id" in responses[1].error.message


@pytest.mark.parametrize(
    ("tenant", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("bogus", grpc.StatusCode.UNAUTHENTICATED),
        ("hotline-a", grpc.StatusCode.PERMISSION_DENIED),
        ("replica", grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_match_stream_needs_a_platform_token(
    running: Running, tenant: str | None, code: grpc.StatusCode
) -> None:
    if tenant is None:
        metadata: tuple[tuple[str, str], ...] = ()
    elif tenant == "bogus":
        metadata = (("authorization", "Bearer not-a-token"),)
    else:
        metadata = bearer(running, tenant)
    request = match_pb2.MatchRequest(item_id="x", hashes=[make_hash(MD5, bytes(16))])
    channel, match = stub(running)
    with channel, pytest.raises(grpc.RpcError) as info:
        list(match.MatchStream(iter([request]), metadata=metadata))
    assert info.value.code() == code


def test_matches_are_counted_per_reference_for_the_owner(running: Running) -> None:
    rng = random.Random(9)
    listed = random_digest(rng, MD5)
    lists = running.lists()
    lists.create_list("iwf")
    lists.apply_changes("iwf", "b1", [upsert(MD5, listed, "R-7")])
    client = running.matcher()
    for _ in range(3):
        assert client.match([make_hash(MD5, listed)]).matched
    client.match([make_hash(MD5, random_digest(rng, MD5))])
    # Counted in memory, flushed within a stats interval (or at shutdown).
    deadline = time.monotonic() + 10
    stats = []
    while time.monotonic() < deadline:
        stats = running.service.store.match_counts(
            running.service.store.get_list("iwf").id  # type: ignore[union-attr]
        )
        if stats and stats[0][1] == 3:
            break
        time.sleep(0.05)
    assert [(ref, n) for ref, n, _ in stats] == [("R-7", 3)]


def test_settings_precedence_flags_env_toml(tmp_path: Path) -> None:
    config = tmp_path / "hashmatch.toml"
    config.write_text(
        'listen = "127.0.0.1:6000"\n'
        "workers = 3\n"
        "threads = 8\n"
        "[tenants.big]\nrate = 10\nburst = 20\n",
        encoding="utf-8",
    )
    env = {"HASHMATCH_WORKERS": "2", "HASHMATCH_TOKEN": "tok", "HASHMATCH_DEMO": "true"}
    settings = Settings.load({"threads": 4, "listen": None}, env=env, config_file=config)
    assert settings.listen == "127.0.0.1:6000"  # TOML (the flag was not given)
    assert settings.workers == 2  # environment over TOML
    assert settings.threads == 4  # flag over TOML
    assert settings.follow_token == "tok" and settings.demo is True
    assert settings.limit_for("big") == TenantLimit(10, 20)
    assert settings.limit_for("other") == TenantLimit(settings.rate_limit, settings.rate_burst)


@pytest.mark.parametrize(
    ("env", "text"),
    [
        ({"HASHMATCH_WORKERS": "many"}, "workers"),
        ({"HASHMATCH_TLS_KEY": "/k.pem"}, "tls_cert and tls_key"),
        ({"HASHMATCH_LOG_FORMAT": "xml"}, "log_format"),
    ],
)
def test_bad_settings_are_refused_naming_them(env: dict[str, str], text: str) -> None:
    with pytest.raises(SettingsError, match=text):
        Settings.load(env=env)


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("wrokers = 2\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="wrokers"):
        Settings.load(env={}, config_file=config)


def batch(*requests: match_pb2.MatchRequest) -> match_pb2.MatchBatchRequest:
    return match_pb2.MatchBatchRequest(items=list(requests))


def test_match_batch_stream_answers_each_batch_in_order(running: Running) -> None:
    rng = random.Random(11)
    listed = random_digest(rng, MD5)
    running.lists().create_list("iwf")
    running.lists().apply_changes("iwf", "b1", [upsert(MD5, listed, "R-1")])
    hit = match_pb2.MatchRequest(item_id="hit", hashes=[make_hash(MD5, listed)])
    miss = match_pb2.MatchRequest(item_id="miss", hashes=[make_hash(MD5, bytes(16))])
    bad = match_pb2.MatchRequest(item_id="bad", hashes=[make_hash(MD5, bytes(5))])
    channel, match = stub(running)
    with channel:
        responses = list(
            match.MatchBatchStream(
                iter([batch(hit, miss), batch(miss, bad, hit), batch(hit)]),
                metadata=bearer(running, "platform"),
            )
        )
    assert [[r.item_id for r in b.results] for b in responses] == [
        ["hit", "miss"],
        ["miss", "bad", "hit"],
        ["hit"],
    ]
    verdicts = [[r.verdict for r in b.results] for b in responses]
    match_, none = match_pb2.VERDICT_MATCH, match_pb2.VERDICT_NO_MATCH
    assert verdicts == [[match_, none], [none, match_pb2.VERDICT_UNSPECIFIED, match_], [match_]]
    assert [(x.list, x.reference_id) for x in responses[2].results[0].references] == [
        ("iwf", "R-1")
    ]
    refused = responses[1].results[1]
    assert refused.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in refused.error.details)
    # Named as MatchBatch names it: the item's index within its message.
    assert bad_request.field_violations[0].field == "items[1].hashes[0].value"
    assert not any(r.HasField("error") for b in (responses[0], responses[2]) for r in b.results)


def test_match_batch_stream_needs_a_platform_token(running: Running) -> None:
    request = match_pb2.MatchRequest(item_id="x", hashes=[make_hash(MD5, bytes(16))])
    channel, match = stub(running)
    with channel, pytest.raises(grpc.RpcError) as info:
        list(match.MatchBatchStream(iter([batch(request)]), metadata=bearer(running, "hotline-a")))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_match_batch_stream_answers_a_refused_message_and_goes_on(running: Running) -> None:
    request = match_pb2.MatchRequest(item_id="x", hashes=[make_hash(MD5, bytes(16))])
    channel, match = stub(running)
    with channel:
        answered = list(
            match.MatchBatchStream(
                iter([batch(request), batch(), batch(request)]),
                metadata=bearer(running, "platform"),
                timeout=10,
            )
        )
    assert [len(r.results) for r in answered] == [1, 0, 1]
    refused = answered[1].error
    assert refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "items" in refused.message
    assert not answered[0].HasField("error") and not answered[2].HasField("error")


def test_sdk_match_batch_stream(running: Running) -> None:
    client = running.matcher()
    batches = [[("a", [make_hash(MD5, bytes(16))])], [("b", [make_hash(MD5, bytes(5))])]]
    results = list(client.match_batch_stream(batches))
    assert [[r.item_id for r in b] for b in results] == [["a"], ["b"]]
    assert results[0][0].error is None and results[1][0].error is not None


def test_async_sdk_match_batch_stream(running: Running) -> None:
    async def go() -> list[list[str]]:
        async with AsyncMatchClient(running.connection("platform")) as client:
            batches = [[("a", [make_hash(MD5, bytes(16))])], [("b", [make_hash(MD5, bytes(16))])]]
            return [[r.item_id for r in b] async for b in client.match_batch_stream(batches)]

    assert asyncio.run(go()) == [["a"], ["b"]]
