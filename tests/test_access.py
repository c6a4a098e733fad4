"""Authentication on every call and the roles of DESIGN.md."""

from __future__ import annotations

import random
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import status_pb2

from conftest import Running
from hashmatch.client import (
    MD5,
    AlreadyExists,
    Connection,
    FailedPrecondition,
    MatchClient,
    NotFound,
    PermissionDenied,
    RetryPolicy,
    Unauthenticated,
)
from hashmatch.client.list_client import build_batch
from hashmatch.v1 import lists_pb2
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
    running.lists("hotline-a").create_list("list-a")
    # It reads only the lists granted to it (test_grants.py): none here.
    assert lists.list_lists() == []
    with pytest.raises(NotFound):
        lists.get_list("list-a")


def test_a_hotline_may_not_match(running: Running) -> None:
    with pytest.raises(PermissionDenied):
        running.matcher("hotline-a").match(hashes((MD5, bytes(16))))


def test_a_hotline_may_not_touch_another_hotlines_list(running: Running) -> None:
    value = random_digest(random.Random(1), MD5)
    running.lists("hotline-b").create_list("list-b")
    a = running.lists("hotline-a")
    with pytest.raises(NotFound) as err:
        a.apply_changes("list-b", "x", [upsert(MD5, value, "EVIL")])
    assert err.value.reason == "ERROR_REASON_LIST_NOT_FOUND"
    with pytest.raises(NotFound):
        a.get_list("list-b")
    assert [x.name for x in a.list_lists()] == []
    assert not running.matcher().match(hashes((MD5, value))).matched
    assert running.lists("hotline-b").get_list("list-b").version == 0


# Every ListService call naming a list: (method, request for a list name, client
# streaming, server streaming).
LIST_CALLS: list[tuple[str, Callable[[str], Message], bool, bool]] = [
    ("GetList", lambda n: lists_pb2.GetListRequest(name=n), False, False),
    ("WatchChanges", lambda n: lists_pb2.WatchChangesRequest(list=n), False, True),
    (
        "ApplyChanges",
        lambda n: build_batch(n, "b1", [upsert(MD5, bytes(range(16)), "R-1")]),
        False,
        False,
    ),
    (
        "UploadChanges",
        lambda n: build_batch(n, "b1", [upsert(MD5, bytes(range(16)), "R-1")]),
        True,
        False,
    ),
    ("GetReferenceStats", lambda n: lists_pb2.GetReferenceStatsRequest(list=n), False, False),
    ("GetFeedback", lambda n: lists_pb2.GetFeedbackRequest(list=n), False, False),
    ("ListQuarantine", lambda n: lists_pb2.ListQuarantineRequest(list=n), False, False),
    (
        "ReleaseQuarantine",
        lambda n: lists_pb2.ReleaseQuarantineRequest(list=n, reference_ids=["R-1"]),
        False,
        False,
    ),
    (
        "UpdateList",
        lambda n: lists_pb2.UpdateListRequest(name=n, flood=lists_pb2.FloodPolicy(factor=0)),
        False,
        False,
    ),
    (
        "GrantAccess",
        lambda n: lists_pb2.GrantAccessRequest(list=n, tenant="platform"),
        False,
        False,
    ),
    (
        "RevokeAccess",
        lambda n: lists_pb2.RevokeAccessRequest(list=n, tenant="platform"),
        False,
        False,
    ),
    ("ListGrants", lambda n: lists_pb2.ListGrantsRequest(list=n), False, False),
]


def refusal(
    running: Running, method: str, request: Message, client_stream: bool, server_stream: bool
) -> tuple[grpc.StatusCode, str, bytes]:
    """The whole status of a refused call: code, message and the encoded details."""
    path = f"/hashmatch.v1.ListService/{method}"
    metadata = (("authorization", f"Bearer {running.tokens['hotline-a']}"),)
    raw = request.SerializeToString()
    with grpc.insecure_channel(running.address) as channel:
        try:
            if client_stream:
                channel.stream_unary(path)(iter([raw]), metadata=metadata, timeout=5)
            elif server_stream:
                list(channel.unary_stream(path)(raw, metadata=metadata, timeout=5))
            else:
                channel.unary_unary(path)(raw, metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            details = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin", b"")  # type: ignore[attr-defined]
            return exc.code(), exc.details(), details  # type: ignore[attr-defined]
    pytest.fail(f"{method} of a list that is not the caller's was answered")


@pytest.mark.parametrize(("method", "build", "client_stream", "server_stream"), LIST_CALLS)
def test_another_tenants_list_is_not_found_exactly_as_a_missing_one(
    running: Running,
    method: str,
    build: Callable[[str], Message],
    client_stream: bool,
    server_stream: bool,
) -> None:
    # The same call on the same name, first when no list has it, then once another
    # hotline's list has it: the whole status is the same, byte for byte.
    missing = refusal(running, method, build("shared"), client_stream, server_stream)
    b = running.lists("hotline-b")
    b.create_list("shared")
    b.apply_changes("shared", "b0", [upsert(MD5, bytes(16), "R-1")])
    theirs = refusal(running, method, build("shared"), client_stream, server_stream)
    assert theirs[0] == grpc.StatusCode.NOT_FOUND, theirs
    status = status_pb2.Status.FromString(theirs[2])
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert theirs == missing


def test_create_list_of_a_taken_name_leaks_least(running: Running) -> None:
    b = running.lists("hotline-b")
    b.create_list("taken")
    # The owner hears that its own list exists.
    with pytest.raises(AlreadyExists) as own:
        b.create_list("taken")
    assert own.value.reason == "ERROR_REASON_LIST_EXISTS"
    # Anyone else only that the name cannot be used: not whose, not that it is a list.
    with pytest.raises(FailedPrecondition) as err:
        running.lists("hotline-a").create_list("taken")
    assert err.value.reason == "ERROR_REASON_UNSPECIFIED"
    assert "exist" not in err.value.message and "hotline-b" not in str(err.value)
    assert [v.field for v in err.value.violations] == ["name"]
    # An operator sees the attempt.
    events = running.service.store.audit_log()
    assert any(e["action"] == "create-list-refused" and e["actor"] == "hotline-a" for e in events)
    assert running.lists("hotline-b").get_list("taken").owner == "hotline-b"


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
