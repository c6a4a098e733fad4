"""Authentication on every call and the roles of DESIGN.md."""

from __future__ import annotations

import random

import grpc
import pytest

from conftest import Running
from hashmatch.client import (
    MD5,
    Connection,
    MatchClient,
    PermissionDenied,
    RetryPolicy,
    Unauthenticated,
)
from helpers import hashes, random_digest, upsert


def test_no_token_is_unauthenticated(running: Running) -> None:
    with pytest.raises(Unauthenticated) as err:
        MatchClient(running.connection(None)).match(hashes((MD5, bytes(16))))
    assert err.value.reason == "ERROR_REASON_UNAUTHENTICATED"
    with pytest.raises(Unauthenticated):
        running.lists(None).list_lists()  # type: ignore[arg-type]


def test_unknown_and_revoked_tokens_are_unauthenticated(running: Running) -> None:
    bogus = Connection(server=running.address, token="hm_nope", retry=RetryPolicy(attempts=1))
    with pytest.raises(Unauthenticated):
        MatchClient(bogus).match(hashes((MD5, bytes(16))))
    client = running.matcher()
    assert not client.match(hashes((MD5, bytes(16)))).matched
    running.service.store.revoke_tokens("platform")
    with pytest.raises(Unauthenticated):
        client.match(hashes((MD5, bytes(16))))


def test_a_platform_may_not_manage_lists(running: Running) -> None:
    lists = running.lists("platform")
    with pytest.raises(PermissionDenied) as err:
        lists.create_list("mine")
    assert err.value.reason == "ERROR_REASON_WRONG_ROLE"
    with pytest.raises(PermissionDenied):
        lists.list_lists()


def test_a_hotline_may_not_match(running: Running) -> None:
    with pytest.raises(PermissionDenied):
        running.matcher("hotline-a").match(hashes((MD5, bytes(16))))


def test_a_hotline_may_not_touch_another_hotlines_list(running: Running) -> None:
    value = random_digest(random.Random(1), MD5)
    running.lists("hotline-b").create_list("list-b")
    a = running.lists("hotline-a")
    with pytest.raises(PermissionDenied) as err:
        a.apply_changes("list-b", "x", [upsert(MD5, value, "EVIL")])
    assert err.value.reason == "ERROR_REASON_NOT_LIST_OWNER"
    with pytest.raises(PermissionDenied):
        a.get_list("list-b")
    assert [x.name for x in a.list_lists()] == []
    assert not running.matcher().match(hashes((MD5, value))).matched
    assert running.lists("hotline-b").get_list("list-b").version == 0


def test_replica_reads_every_list_but_cannot_write(running: Running) -> None:
    running.lists("hotline-a").create_list("list-a")
    running.lists("hotline-b").create_list("list-b")
    replica = running.lists("replica")
    assert sorted(x.name for x in replica.list_lists()) == ["list-a", "list-b"]
    with pytest.raises(PermissionDenied):
        replica.apply_changes("list-a", "x", [upsert(MD5, bytes(16), "R")])


def test_health_and_reflection_need_no_token(running: Running) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(running.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="hashmatch.v1.MatchService"), timeout=5
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"hashmatch.v1.MatchService", "hashmatch.v1.ListService"} <= names
